"""The HTTP/JSON front end: nlu.v1 in the proto's JSON mapping and Rasa's `/model/parse`, on
Starlette served by uvicorn in the gRPC server's event loop, over the same core."""
