"""The two networks of SRADM: the RRDB low-resolution encoder and the attention U-Net noise predictor."""

from .attention import WindowAttention
from .rrdb_encoder import RRDBEncoder
from .unet import SRADMUNet, SRADMUNetOutput

__all__ = ["RRDBEncoder", "SRADMUNet", "SRADMUNetOutput", "WindowAttention"]
