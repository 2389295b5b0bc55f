"""Constants shared by the test modules (a plain module: ``conftest`` names clash across test folders)."""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
