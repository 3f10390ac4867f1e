"""The layer mixin: a tape-based engine needs no per-layer machinery."""


class BackendLayer:
    pass
