# The NoRepositoryCheckouts check; runs between smoke_hygiene_prelude.sh and smoke_hygiene_epilogue.sh.
for H in $(homes); do
  report "checkout or build output" "$(s find "$H" -mindepth 1 -maxdepth 6 \( -name .cache -o -name .npm -o -name .nvm -o -name .pnpm-store -o -name .volta -o -name .fnm -o -name .cargo -o -name .rustup -o -name .oh-my-zsh -o -name .vscode-server -o -path '*/go/pkg/mod' -o -path '*/.local/share/pnpm' -o -path '*/.local/lib' \) -prune -o \( -name .git -o -type d -name node_modules -o -type d -name dist \) -print -prune 2>/dev/null)"
done
report "checkout or build output in work root" "$(s find "$WORK" -mindepth 1 -maxdepth 8 \( -name .git -o -type d -name node_modules -o -type d -name dist \) -print -prune 2>/dev/null)"
