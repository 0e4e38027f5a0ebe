"""Speed and accuracy benchmarks of `sentiment` against the tools a user would pick instead.

python -m benchmarks.run            # the full comparison, writes benchmarks/RESULTS.md
python -m benchmarks.run --tiny     # the same at toy size (seconds), for a smoke test
bash benchmarks/gpu_check.sh        # throughput and MFU on one CUDA GPU (under 5 minutes)
"""
