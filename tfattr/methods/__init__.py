"""Attribution methods; each builds engine rows and picks a gradient function."""

from tfattr.methods.gradcam import GradCAM, RSIGradCAM
from tfattr.methods.gradient import Gradient, InputXGradient
from tfattr.methods.integrated_gradients import IntegratedGradients

__all__ = ["GradCAM", "RSIGradCAM", "Gradient", "InputXGradient", "IntegratedGradients"]
