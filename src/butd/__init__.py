"""butd: the bottom-up-attention Visual Genome Faster R-CNN (ResNet-101 C4), the detector
whose 36 region features per image LXMERT-family models read. A model library of its own:
no task code, no command line (tools.extract_features drives it)."""
from butd.config import VG_CONFIG, DetectorConfig
from butd.modeling import BUTDDetector, DetectorOutput
from butd.preprocess import PreparedImage, prepare_image
from butd.regions import Regions, select_regions
from butd.weights import LoadInfo, WeightsError, convert_weights, load_detector

__all__ = ["VG_CONFIG", "DetectorConfig", "BUTDDetector", "DetectorOutput", "PreparedImage",
           "prepare_image", "Regions", "select_regions", "LoadInfo", "WeightsError",
           "convert_weights", "load_detector"]
