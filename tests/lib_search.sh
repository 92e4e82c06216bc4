# lib_search.sh - what the search tests share (tests/cli_search*.sh). Sourced
# after lib_cli.sh, never run (not named cli_*.sh, so CMake does not register it).

# space LIMIT EPOCHS [EXTRA...]: a small space over models/search_cnn.nn
space() {
    local limit=$1 epochs=$2; shift 2
    cat <<EOF
[search]
model = $SRC/models/search_cnn.nn
val = 300
train_limit = $limit
$(printf '%s\n' "$@")
[model]
C1 = int 4 12 log
STAGE = choice plain bn
FC = choice 32 64
[optimizer]
name = choice sgd adamw
lr = float 0.001 0.1 log
momentum = float 0.8 0.95 if name == sgd
[train]
epochs = $epochs
batch = choice 32 64
threads = 1
EOF
}
