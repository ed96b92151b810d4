#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the real webhook fixtures and small hand-made inputs, in the
# layouts fuzz/src/lib.rs documents. Run once before a long fuzzing run (then `cargo fuzz cmin`);
# the kept corpus already holds what survived minimization.
#
#   fuzz/seed.sh [fixtures dir]   (default: ../shared/bitbucket-fixtures beside the repo)
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
fixtures=${1:-$fuzz_dir/../../shared/bitbucket-fixtures}
corpus=$fuzz_dir/corpus
[[ -f $fixtures/MANIFEST.tsv ]] || { echo "no MANIFEST.tsv in $fixtures" >&2; exit 1; }
mkdir -p "$corpus"/{signature_header,cloud_webhook,datacenter_webhook,admin_bodies}

# seed <target> <name> <printf format> [args…]: one hand-made input.
seed() {
    local target=$1 name=$2
    shift 2
    # shellcheck disable=SC2059 # the format is the point
    printf "$@" >"$corpus/$target/seed-$name"
}

# Webhooks: `<event key>\n<exact fixture bytes>`.
while IFS=$'\t' read -r file flavor event_key _; do
    [[ $file == file ]] && continue
    target=${flavor/datacenter/datacenter_webhook}
    target=${target/cloud/cloud_webhook}
    { printf '%s\n' "$event_key"; cat "$fixtures/$file"; } >"$corpus/$target/fixture-$(basename "$file" .json)"
done <"$fixtures/MANIFEST.tsv"

# Signatures: the known-good vectors, `<header>\n<secret>\n<exact fixture bytes>`.
while IFS=$'\t' read -r file secret header; do
    [[ $file == file ]] && continue
    name=$(dirname "$file")-$(basename "$file" .json)
    { printf '%s\n%s\n' "$header" "$secret"; cat "$fixtures/$file"; } >"$corpus/signature_header/fixture-$name"
    # The same vector in upper case, padded, and with a rotated-out secret beside it.
    { printf ' %s \nold\t%s\n' "${header^^}" "$secret"; cat "$fixtures/$file"; } \
        >"$corpus/signature_header/fixture-$name-rotated"
done <"$fixtures/SIGNATURES.tsv"

s=signature_header
seed $s empty ''
seed $s no-body 'sha256=0000000000000000000000000000000000000000000000000000000000000000\nsecret\n'
seed $s sha1 'sha1=da39a3ee5e6b4b0d3255bfef95601890afd80709\nsecret\n{}'
seed $s short 'sha256=abc\nsecret\n{}'
seed $s no-equals 'sha256\n\n'
seed $s no-secrets 'sha256=f205c729821c6954aff2afe72b965c34015b4baf96ea8ddc2cc44999c014a035\n\n{"push":{}}'

c=cloud_webhook
seed $c push-empty 'repo:push\n{"push":{"changes":[]},"repository":{"full_name":"ws/repo"}}'
seed $c push-null-sides 'repo:push\n{"push":{"changes":[{"new":null,"old":null},{"new":{"type":"branch","name":"a","target":{"hash":"1"}},"old":{"type":"branch","name":"a"},"forced":true}]}}'
seed $c status 'repo:commit_status_updated\n{"commit_status":{"key":"k","state":"SUCCESSFUL","refname":"main","url":"https://x","commit":{"hash":"abc"}},"repository":{"full_name":"w/r"}}'
seed $c pr-minimal 'pullrequest:fulfilled\n{"pullrequest":{"id":1,"source":{},"destination":{"branch":{"name":"main"}}}}'
seed $c unknown 'issue:created\n{"repository":null}'
seed $c by-index '\001{"pullrequest":{"id":18446744073709551615,"source":{"branch":null,"commit":null},"destination":{}}}'
seed $c not-json 'repo:push\n{"push":'

d=datacenter_webhook
seed $d ping 'diagnostics:ping\n{"test": true}'
seed $d refs-limit 'mirror:repo_synchronized\n{"changes":[],"refLimitExceeded":true,"repository":{"slug":"r","project":{"key":"P"}}}'
seed $d refs-mixed 'repo:refs_changed\n{"changes":[{"refId":"refs/tags/v1","fromHash":"0000000000000000000000000000000000000000","toHash":"abc","type":"ADD"},{"ref":{"id":"refs/heads/x","displayId":"x","type":"BRANCH"},"fromHash":"a","toHash":"","type":"update"},{"type":"DELETE"}]}'
seed $d pr-minimal 'pr:deleted\n{"pullRequest":{"id":7,"fromRef":{"id":"refs/heads/f"},"toRef":{"id":"refs/heads/main","repository":{"slug":"r","project":{"key":"K"}}}}}'
seed $d unknown 'repo:something\n{"repository":{"slug":"r"}}'
seed $d by-index '\002{"pullRequest":{"id":0,"fromRef":{"id":""},"toRef":{"id":"x"}}}'

a=admin_bodies
seed $a new-cloud '0{"name":"Docs","flavor":"cloud","workspace":"acme","repository":"docs","credential":{"kind":"api_token","email":"a@b.c","token":"t"},"options":{"build_branches":["main","release/*"],"stale_branches":{"protected":["hotfix/**"]}}}'
seed $a new-dc-url '0{"name":" DC ","description":"x","flavor":"datacenter","repository_url":"https://git.example.com/ctx/projects/KEY/repos/repo/browse","credential":{"kind":"http_token","token":"t"},"register_webhook":false}'
seed $a new-dc-user '0{"name":"u","flavor":"datacenter","base_url":"http://127.0.0.1:7990/","repository_url":"http://127.0.0.1:7990/users/bob/repos/r","credential":{"kind":"http_token","token":"t"}}'
seed $a new-cloud-url '0{"name":"c","flavor":"cloud","repository_url":"https://bitbucket.org/ws/repo.git","credential":{"kind":"oauth_consumer","key":"k","secret":"s"}}'
seed $a new-bad-kind '0{"name":"c","flavor":"cloud","workspace":"w","repository":"r","credential":{"kind":"http_token","token":"t"},"extra":1}'
seed $a patch '1{"name":"n","description":"","options":{"fetch_branches":false,"stale_branches":{"enabled":true,"merged_days":3,"inactive_days":90,"max_deletions":5}},"credential":{"kind":"app_password","username":"u","app_password":"p"}}'
seed $a patch-access '1{"credential":{"kind":"access_token","token":" "}}'
seed $a target '2{"directory":"/backups/postman/","filename":"api.json","branch":"backups","author":"Bot <bot@example.com>","message":"Back up {target}: {path} v{version} ({sha256})"}'
seed $a target-bad '2{"directory":"a/../b","filename":"..","branch":"a..b","message":"{oops"}'
seed $a snapshot '3{"document":{"b":[3,{"z":1,"a":null}],"a":"\\u00e9","A":1.5e300,"n":-0.0},"version":7,"message":"m"}'
seed $a snapshot-array '3{"document":[1,2.5,"x",true,null,{}]}'
seed $a run '4{"branch":"main","commit":"ABCDEF0","selector":{"type":"custom","pattern":"deploy"},"variables":[{"key":"K_1","value":"v","secured":true}]}'
seed $a run-bad '4{"branch":"-x","selector":{"type":"branches","pattern":" "},"variables":[{"key":"1a","value":""}]}'
seed $a prune '5{"mode":"stale-branches","dry_run":false}'
seed $a prune-env '5{"mode":"environments"}'
seed $a params-id '6my-integration_1'
seed $a params-limit '620'
seed $a options '7{"build_branches":["**/x*","*"],"stale_branches":{"protected":["release/*/fix"]}}'

echo "seeded: $(for t in "$corpus"/*/; do printf '%s=%s ' "$(basename "$t")" "$(ls "$t" | wc -l)"; done)"
