# Writes the .npy fixtures of npy_test.cc with numpy itself, so the reader
# is checked against numpy's own files. Run: python3 make_fixtures.py
import numpy as np

np.save("f32.npy", np.array([[1, -2.5, 2**-10], [0, 65504, -0.0]], dtype="<f4"))
np.save("f16.npy", np.array([[1, -2.5, 2**-10], [0, 65504, 2**-24]], dtype="<f2"))
bf16_values = np.array([[1, -2.5, 2**-10], [0, 1.5 * 2**100, 2**-130]], dtype="<f4")
np.save("bf16.npy", (bf16_values.view("<u4") >> 16).astype("<u2").view("V2"))
np.save("cube.npy", np.arange(8, dtype="<f4").reshape(2, 2, 2))
np.save("offsets_i8.npy", np.array([0, 2, 2, 5], dtype="<i8"))
np.save("lengths_u4.npy", np.array([2, 0, 3], dtype="<u4"))
np.save("negative_i2.npy", np.array([-1, 300], dtype="<i2"))
np.save("ids_unicode.npy", np.array(["a", "d\u00e9", "\u65e5\u672c", "\U0001F600x"]))
np.save("ids_bytes.npy", np.array([b"x", b"yz"]))
with open("v2.npy", "wb") as f:
    np.lib.format.write_array(f, np.array([7, 8, 9], dtype="<i4"), version=(2, 0))
np.save("big_endian.npy", np.array([1, 2], dtype=">f4"))
np.save("fortran.npy", np.asfortranarray(np.ones((2, 3), dtype="<f4")))
np.save("bool.npy", np.array([True, False]))
np.save("structured.npy", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
np.save("f64.npy", np.ones((2, 2), dtype="<f8"))
