#!/usr/bin/env sh
# Python stubs (+ .pyi) for proto/nlu/v1/nlu.proto into OUT (a `service/gen` folder), importable
# as `service.gen.nlu.v1`. One recipe for `make proto` and the image build.
#   proto/generate.sh PYTHON OUT        (PYTHON has grpcio-tools)
#   PEER_OUT=benchmarks/gen proto/generate.sh PYTHON OUT   (also the benchmarks' KServe v2 stubs)
set -eu
python=$1
out=$2
here=$(dirname "$0")
rm -rf "$out" && mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$here" --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" "$here/nlu/v1/nlu.proto"
sed -i 's/^from nlu\.v1 import/from service.gen.nlu.v1 import/' "$out/nlu/v1/nlu_pb2_grpc.py"
touch "$out/__init__.py" "$out/nlu/__init__.py" "$out/nlu/v1/__init__.py"
# The KServe v2 subset the peers benchmark speaks (benchmarks only, never in the image).
if [ -n "${PEER_OUT:-}" ]; then
    rm -rf "$PEER_OUT" && mkdir -p "$PEER_OUT"
    "$python" -m grpc_tools.protoc -I "$here" --python_out="$PEER_OUT" --pyi_out="$PEER_OUT" \
        --grpc_python_out="$PEER_OUT" "$here/inference/predict_v2.proto"
    sed -i 's/^from inference import/from benchmarks.gen.inference import/' \
        "$PEER_OUT/inference/predict_v2_pb2_grpc.py"
    touch "$PEER_OUT/__init__.py" "$PEER_OUT/inference/__init__.py"
fi
