"""Int8 post-training quantization: calibration, integer units with fixed-point requantize epilogues."""

from .calibration import METHODS, RangeObserver
from .params import TensorQuant, activation_quant, fixed_point_multiplier, requantize_reference, weight_quant
from .quantizer import QuantizeConfig, QuantReport, plan_from_model, quantize_plan
from .realize import Accelerator, IntegerUnit, QuantPlan, RealizeQuantization
from .units import Unit, find_units

__all__ = ["Accelerator", "IntegerUnit", "METHODS", "QuantPlan", "QuantReport", "QuantizeConfig", "RangeObserver", "RealizeQuantization",
           "TensorQuant", "Unit", "activation_quant", "find_units", "fixed_point_multiplier", "plan_from_model",
           "quantize_plan",
           "requantize_reference", "weight_quant"]
