"""Medical image I/O: readers and writers around the :class:`Volume` type."""

from meddiff.io.readers import ImageItem, check_not_constant, find_images, read_volume
from meddiff.io.volume import Volume
from meddiff.io.writers import write_volume

__all__ = ["ImageItem", "Volume", "check_not_constant", "find_images", "read_volume", "write_volume"]
