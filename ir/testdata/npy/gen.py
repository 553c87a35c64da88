# Regenerates the .npy fixtures of ir/src/npy.rs's tests (numpy 2.x, ml_dtypes):
#   python gen.py
import numpy as np, ml_dtypes
np.save('i16.npy', np.array([[-2, 32767], [-32768, 7]], dtype=np.int16))
np.save('u16.npy', np.array([0, 65535, 258], dtype=np.uint16))
np.save('u32.npy', np.array([4294967295, 1, 70000], dtype=np.uint32))
np.save('u64.npy', np.array([0, 2**53, 12345678901], dtype=np.uint64))
np.save('u64_big.npy', np.array([2**53 + 1], dtype=np.uint64))
np.save('bf16.npy', np.array([1.0, -2.5, 3.140625, np.inf], dtype=ml_dtypes.bfloat16))
np.save('f8e4m3fn.npy', np.array([1.0, -448.0], dtype=ml_dtypes.float8_e4m3fn))
np.save('u16_scalar.npy', np.uint16(513))
