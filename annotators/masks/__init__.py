"""Masks: operations VACE uses on masks, person masks offline (MediaPipe), SAM2 video segmentation."""

from .ops import bbox, expand, feather, hull, invert

__all__ = ["bbox", "expand", "feather", "hull", "invert"]
