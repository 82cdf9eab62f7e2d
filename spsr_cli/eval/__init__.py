"""Benchmark evaluation: MATLAB-compatible PSNR/SSIM, LPIPS, datasets and the ``spsr eval`` runner."""
