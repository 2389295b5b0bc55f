"""Constants and helpers shared by the test modules (a plain module: ``conftest`` names clash across test folders)."""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def close(a, b, atol, rtol=1e-5):
    torch.testing.assert_close(a.detach().double().cpu(), b.double(), atol=atol, rtol=rtol)
