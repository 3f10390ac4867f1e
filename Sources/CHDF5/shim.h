#include <hdf5.h>

/* HDF5's predefined type and property ids are macros over globals that H5open() fills in,
 * which Swift cannot import; these functions hand them over. */
static inline hid_t sk_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t sk_h5s_all(void) { return H5S_ALL; }
static inline unsigned sk_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned sk_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline hid_t sk_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t sk_h5t_native(int code)
{
    switch (code) {
    case 0: return H5T_NATIVE_HBOOL;
    case 1: return H5T_NATIVE_INT8;
    case 2: return H5T_NATIVE_INT16;
    case 3: return H5T_NATIVE_INT32;
    case 4: return H5T_NATIVE_INT64;
    case 5: return H5T_NATIVE_UINT8;
    case 6: return H5T_NATIVE_UINT16;
    case 7: return H5T_NATIVE_UINT32;
    case 8: return H5T_NATIVE_UINT64;
    case 11: return H5T_NATIVE_FLOAT;
    case 12: return H5T_NATIVE_DOUBLE;
    default: return -1;
    }
}
/* Silences HDF5's default error printing to stderr: failures come back as Swift errors. */
static inline void sk_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
