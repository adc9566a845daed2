"""sensor_msgs/Image <-> NumPy without cv_bridge."""
import numpy as np
import pytest

from ros_io.images import image_to_numpy, numpy_to_image


@pytest.mark.parametrize("encoding, shape, dtype", [
    ("rgb8", (4, 5, 3), np.uint8), ("bgra8", (4, 5, 4), np.uint8), ("mono8", (4, 5), np.uint8),
    ("16UC1", (4, 5), np.uint16), ("32FC1", (4, 5), np.float32),
])
def test_round_trip(encoding, shape, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.random(shape) * 200).astype(dtype)
    msg = numpy_to_image(arr, encoding)
    assert (msg.height, msg.width) == shape[:2]
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_padded_rows_and_big_endian():
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4)
    msg = numpy_to_image(arr, "16UC1")
    padded = np.zeros((3, 10), np.uint8)
    padded[:, :8] = arr.astype(">u2").view(np.uint8).reshape(3, 8)
    msg.step, msg.is_bigendian, msg.data = 10, 1, padded.tobytes()
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_bad_images_raise_clear_errors():
    msg = numpy_to_image(np.zeros((4, 4), np.float32), "32FC1")
    msg.encoding = "yuv422_weird"
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_to_numpy(msg)
    msg = numpy_to_image(np.zeros((4, 4), np.float32), "32FC1")
    msg.height = 8
    with pytest.raises(ValueError, match="does not hold"):
        image_to_numpy(msg)
    with pytest.raises(ValueError, match="does not fit"):
        numpy_to_image(np.zeros((4, 4)), "rgb8")
