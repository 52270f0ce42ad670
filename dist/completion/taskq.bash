# bash completion for taskq, taskq-master and taskq-worker.
# Commands and flags come from the programs' own --help (so they follow
# the settings tables); queue names from `taskq status --json`.

_taskq_flags()
{
    "$@" --help 2>/dev/null | sed -n 's/^  \(--[a-z0-9-]*\).*/\1/p'
}

_taskq_queues()
{
    # the connection flags already typed, so the right master is asked
    local -a conn=()
    local i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --connect | --authkey-file | --config) conn+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;
        esac
    done
    taskq "${conn[@]}" --connect-timeout 1 status --json 2>/dev/null | tr -d '\n' |
        sed -n 's/.*"queues":[[:space:]]*\[\([^]]*\)\].*/\1/p' |
        grep -o '"name":[[:space:]]*"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'
}

_taskq()
{
    local cur prev cmd="" i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands
    commands=$(taskq --help 2>/dev/null | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --connect | --authkey-file | --config | --connect-timeout | --reconnect-timeout | --ack-timeout)
            ((i++)) ;;
        -*) ;;
        *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    case $prev in
    --authkey-file | --config) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --queue | -q) COMPREPLY=($(compgen -W "$(_taskq_queues)" -- "$cur")); return ;;
    --state) COMPREPLY=($(compgen -W "queued delayed running done failed dead cancelled" -- "$cur")); return ;;
    esac
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$(_taskq_flags taskq)" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_taskq_flags taskq "$cmd")" -- "$cur"))
    elif [[ $cmd == pause || $cmd == resume ]]; then
        COMPREPLY=($(compgen -W "$(_taskq_queues)" -- "$cur"))
    elif [[ $cmd == queue ]]; then
        if [[ $prev == queue || $prev == --json ]]; then
            COMPREPLY=($(compgen -W "empty delete" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$(_taskq_queues)" -- "$cur"))
        fi
    fi
}

_taskq_daemon()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    case $prev in
    --config | --authkey-file | --plugin) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --data-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --log-level) COMPREPLY=($(compgen -W "error warn info debug" -- "$cur")); return ;;
    --fsync) COMPREPLY=($(compgen -W "always interval off" -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "$(_taskq_flags "$1")" -- "$cur"))
}

complete -F _taskq taskq
complete -F _taskq_daemon taskq-master taskq-worker
