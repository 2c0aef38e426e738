"""The gRPC front end (nlu.v1): servicer, interceptor chain, authentication, TLS and the server
wiring, over the transport-neutral core."""
