"""Benchmarks of the service, run from the repository root as modules:
`python -m bench.<script> --help` (docs/PERFORMANCE.md, docs/SCALING.md).

They use the product's services and selectors and the shared helpers in devkit/; the
tests never import bench/.
"""
