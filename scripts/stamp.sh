# Sourced by the install scripts: a stamp file records a hash of the files an install depends on,
# so rerunning with nothing changed returns at once.
#   current STAMP FILE...  succeeds when STAMP holds the hash of FILE...
#   stamp STAMP FILE...    records it (after a successful install)
_stamp_hash() { cat "$@" | sha256sum | cut -c1-16; }
current() { local file="$1"; shift; [[ -f "$file" && "$(cat "$file")" == "$(_stamp_hash "$@")" ]]; }
stamp() { local file="$1"; shift; _stamp_hash "$@" > "$file"; }
