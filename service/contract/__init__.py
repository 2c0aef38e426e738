"""The train/serve contract: the code `export/` and `service/` share, and nothing else.

`export/` imports only this package; it imports nothing else from `service/`
(`tests/test_layering.py` enforces both).
"""
