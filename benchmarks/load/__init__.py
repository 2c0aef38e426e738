"""The measuring library every load-driven suite shares: targets (what a call is, per protocol:
`targets`), closed and open loops that record every call (`loops`), and the CPU the processes
under test spend (`cpu`). `python -m benchmarks load` points it at a deployed service."""
