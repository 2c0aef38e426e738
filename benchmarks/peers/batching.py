"""How each peer batches, in one place: its server applies it and the suite records it.
Both as ours: up to 32 utterances a batch, no waiting where the server allows it (Triton's
queue delay 0: a batch takes what queued while the previous one ran; MLServer turns batching
off at 0, so it waits at most 1 ms for a batch to fill)."""

TRITON = {"max_batch_size": 32, "max_queue_delay_microseconds": 0, "instances": 1}
MLSERVER = {"max_batch_size": 32, "max_batch_time_s": 0.001, "parallel_workers": 1}
