#!/usr/bin/env sh
# `buildah bud` flags that let pip inside the build use this machine's pip configuration (index,
# find-links, constraints, CA bundle): read-only mounts, present during RUN steps only, never
# baked into the image. Prints nothing on a machine without such configuration.
#   buildah bud $(deploy/pip-mounts.sh PYTHON) ...
set -eu
python=$1
conf=build/pip.conf
mkdir -p build
# `pip config list` shows file settings, then environment ones (global.x='v', :env:.x='v'):
# one line per key, the environment's winning.
{
    echo "[global]"
    "$python" -m pip config list 2>/dev/null |
        sed -n "s/^[^.]*\.\([a-z-]*\)='\(.*\)'$/\1 = \2/p" |
        awk -F' = ' '{ value[$1] = $0 } END { for (key in value) print value[key] }'
} > "$conf"
printf -- '-v %s:/etc/pip.conf:ro ' "$(pwd)/$conf"
# A local `.../simple` index links to files beside it: mount its parent folder.
for path in $(sed -n 's/^[a-z-]* = //p' "$conf" | tr ' ' '\n' | sed 's|^file://||; s|/simple/*$||' |
    sort -u); do
    case "$path" in
    /*) if [ -e "$path" ]; then printf -- '-v %s:%s:ro ' "$path" "$path"; fi ;;
    esac
done
