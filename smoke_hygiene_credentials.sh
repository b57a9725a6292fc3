# The NoCredentials check; runs between smoke_hygiene_prelude.sh and smoke_hygiene_epilogue.sh.
# Set before it: TOKRE, the regexp of a line assigning a secret.
for H in $(homes); do
  report "aws credentials" "$(s find "$H/.aws" -maxdepth 1 -type f -name credentials 2>/dev/null)"
  report "gcloud credentials" "$(s find "$H/.config/gcloud" -type f 2>/dev/null | head -n 10)"
  report "ssh private key" "$(s find "$H/.ssh" -maxdepth 1 -type f -name 'id_*' ! -name '*.pub' 2>/dev/null)"
  report "netrc or git credentials" "$(s find "$H" -maxdepth 1 -type f \( -name .netrc -o -name .git-credentials \) 2>/dev/null)"
  report "npm auth token" "$(s find "$H" -maxdepth 1 -type f -name .npmrc -exec grep -l _authToken {} + 2>/dev/null)"
  report "github cli token" "$(s find "$H/.config/gh" -maxdepth 1 -type f -name hosts.yml -exec grep -l oauth_token {} + 2>/dev/null)"
  report "docker registry auth" "$(s find "$H/.docker" -maxdepth 1 -type f -name config.json -exec grep -l '"auth"' {} + 2>/dev/null)"
  report "hcloud token" "$(s find "$H/.config/hcloud" -maxdepth 1 -type f -name cli.toml -exec grep -l token {} + 2>/dev/null)"
  report "token in shell profile" "$(s find "$H" -maxdepth 1 -type f \( -name .bashrc -o -name .profile -o -name .bash_profile -o -name .zshrc -o -name .zshenv \) -exec grep -lE "$TOKRE" {} + 2>/dev/null)"
  report "token in env file" "$(s find "$H" -maxdepth 4 -type f \( -name .env -o -name '.env.*' -o -name '*.env' \) -exec grep -lE "$TOKRE" {} + 2>/dev/null)"
done
report "token in env file" "$(s find "$WORK" -maxdepth 4 -type f \( -name .env -o -name '.env.*' -o -name '*.env' \) -exec grep -lE "$TOKRE" {} + 2>/dev/null)"
