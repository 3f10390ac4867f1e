"""SavedModel export is not available for the swift backend."""


class SavedModelExportArchive:
    def track(self, resource):
        raise NotImplementedError(
            "`track` is not implemented in the swift backend."
        )

    def add_endpoint(self, name, fn, input_signature=None, **kwargs):
        raise NotImplementedError(
            "`add_endpoint` is not implemented in the swift backend."
        )
