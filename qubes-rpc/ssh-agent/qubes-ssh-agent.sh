# /etc/profile.d/qubes-ssh-agent.sh: point OpenSSH at the split-SSH forwarder socket
# (qubes-ssh-agent.socket), unless the user already chose an agent.
if [ -z "${SSH_AUTH_SOCK:-}" ]; then
    SSH_AUTH_SOCK="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/qubes-ssh-agent/agent.sock"
    export SSH_AUTH_SOCK
fi
