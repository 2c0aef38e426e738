#!/usr/bin/env sh
# Python stubs (+ .pyi) for proto/nlu/v1/nlu.proto into OUT (a `service/gen` folder), importable
# as `service.gen.nlu.v1`. One recipe for `make proto` and the image build.
#   proto/generate.sh PYTHON OUT        (PYTHON has grpcio-tools)
set -eu
python=$1
out=$2
here=$(dirname "$0")
rm -rf "$out" && mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$here" --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" "$here/nlu/v1/nlu.proto"
sed -i 's/^from nlu\.v1 import/from service.gen.nlu.v1 import/' "$out/nlu/v1/nlu_pb2_grpc.py"
touch "$out/__init__.py" "$out/nlu/__init__.py" "$out/nlu/v1/__init__.py"
