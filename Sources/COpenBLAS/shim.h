#include <stddef.h>
#include <cblas.h>

/* LAPACK's Fortran entry points, as exported by OpenBLAS (built with LAPACK but without
 * LAPACKE). Column-major; every argument by pointer; character arguments carry gfortran's
 * hidden trailing length arguments. */
#define TE_LAPACK_REAL(T, P) \
  void P##getrf_(const int *m, const int *n, T *a, const int *lda, int *ipiv, int *info); \
  void P##getri_(const int *n, T *a, const int *lda, const int *ipiv, T *work, const int *lwork, int *info); \
  void P##getrs_(const char *trans, const int *n, const int *nrhs, const T *a, const int *lda, const int *ipiv, \
                 T *b, const int *ldb, int *info, size_t trans_len); \
  void P##potrf_(const char *uplo, const int *n, T *a, const int *lda, int *info, size_t uplo_len); \
  void P##trtrs_(const char *uplo, const char *trans, const char *diag, const int *n, const int *nrhs, const T *a, \
                 const int *lda, T *b, const int *ldb, int *info, size_t uplo_len, size_t trans_len, size_t diag_len); \
  void P##geqrf_(const int *m, const int *n, T *a, const int *lda, T *tau, T *work, const int *lwork, int *info); \
  void P##orgqr_(const int *m, const int *n, const int *k, T *a, const int *lda, const T *tau, T *work, \
                 const int *lwork, int *info); \
  void P##syevd_(const char *jobz, const char *uplo, const int *n, T *a, const int *lda, T *w, T *work, \
                 const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len); \
  void P##gesdd_(const char *jobz, const int *m, const int *n, T *a, const int *lda, T *s, T *u, const int *ldu, \
                 T *vt, const int *ldvt, T *work, const int *lwork, int *iwork, int *info, size_t jobz_len); \
  void P##gelsd_(const int *m, const int *n, const int *nrhs, T *a, const int *lda, T *b, const int *ldb, T *s, \
                 const T *rcond, int *rank, T *work, const int *lwork, int *iwork, int *info); \
  void P##geev_(const char *jobvl, const char *jobvr, const int *n, T *a, const int *lda, T *wr, T *wi, T *vl, \
                const int *ldvl, T *vr, const int *ldvr, T *work, const int *lwork, int *info, size_t jobvl_len, \
                size_t jobvr_len);

TE_LAPACK_REAL(float, s)
TE_LAPACK_REAL(double, d)
#undef TE_LAPACK_REAL

/* Whether the engine is compiled for a CPU with fused multiply-add: -march=x86-64-v3 (the
 * second engine build) defines __FMA__, and every arm64 CPU has it. The float32 polynomial
 * kernels (VecMath) fuse their multiply-adds only then; elsewhere a fused multiply-add is a
 * libm call. */
#if defined(__FMA__) || defined(__aarch64__)
#define TE_HAS_FMA 1
#else
#define TE_HAS_FMA 0
#endif

/* Whether the build has 256-bit vectors (x86-64-v3). float32 power computes in double
 * (VecMath.pow), four lanes to a register there; with SSE2's two it measured slower than
 * libm's scalar powf, so the baseline build keeps powf. */
#if defined(__AVX2__)
#define TE_HAS_AVX2 1
#else
#define TE_HAS_AVX2 0
#endif
