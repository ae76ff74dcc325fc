"""Offline data: digits composited onto crops of real photographs, with ground-truth masks."""

from tfattr.data.synthetic import PHOTOS, digits_on_photos

__all__ = ["PHOTOS", "digits_on_photos"]
