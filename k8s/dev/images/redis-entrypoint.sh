#!/bin/sh
# As the redis image's entrypoint: flags alone mean redis-server's; without a config file the
# server starts with protected mode off (the redis image builds it so), since a pod's clients
# never come from loopback. A later `--protected-mode yes` in the args still wins.
set -e
case "$1" in -*) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  case "$2" in
    *.conf) ;;
    *) shift; set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
