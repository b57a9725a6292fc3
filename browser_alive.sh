# Tells whether the browser led by PID still runs: prints "alive", or
# "exited" and the tail of its log DIR/browser.log. Set before it: PID, DIR.
# Runs after desktop_prelude.sh.
if [ -d /proc/self ]; then
  st=""
  if [ -r "/proc/$PID/stat" ]; then
    st=$(cat "/proc/$PID/stat" 2>/dev/null)
    st=${st##*) }
    st=${st%% *}
  fi
  case "$st" in
    "" | Z | X) ;;
    *) echo alive; exit 0 ;;
  esac
elif kill -0 "$PID" 2>/dev/null; then
  echo alive; exit 0
fi
echo exited
tail -n 5 "$R$DIR/browser.log" 2>/dev/null | tr -d '\r' | cut -c1-200
exit 0
