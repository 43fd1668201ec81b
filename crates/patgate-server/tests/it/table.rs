//! The tokens table and the credentials inventory: per-permission usage, the flags at their
//! edges, filters, sorting and paging.

use patgate_server::jobs;
use patgate_store::Store;
use serde_json::{Value, json};

use crate::support::{API_REGISTRY, App, Backend, Reply, on_both_backends, start};

const TOKENS: &str = "/api/v1/personal_access_tokens";
const INVENTORY: &str = "/api/v1/admin/credentials";
const SETTINGS: &str = "/api/v1/admin/settings";
const DAY: i64 = 86_400;
/// `container_registry:create` at acme/platform/api.
const REGISTRY_RULES: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/registry/protection/repository/rules";

on_both_backends!(
    permission_uses_drive_the_unused_permissions_flag,
    flags_mark_broad_write_everywhere_expiring_and_over_policy_tokens,
    filters_sort_and_pages,
    the_inventory_is_for_administrators_and_bad_filters_are_named,
    a_token_is_narrowed_to_what_it_used,
    a_legacy_token_is_replaced_by_the_fine_grained_token_it_needs,
);

/// The tokens `query` selects from `uri`, as `token` sees them, with the reply.
async fn listed(app: &App, token: &str, uri: &str, query: &str) -> (Vec<Value>, Reply) {
    let reply = app.call("GET", &format!("{uri}?{query}"), Some(token), None).await;
    reply.expect(200);
    (reply.json().as_array().unwrap().clone(), reply)
}

fn names(tokens: &[Value]) -> Vec<&str> {
    tokens.iter().map(|token| token["name"].as_str().unwrap()).collect()
}

fn flags(token: &Value) -> Vec<&str> {
    token["flags"].as_array().unwrap().iter().map(|flag| flag.as_str().unwrap()).collect()
}

/// A flag filter (alone, with a kind, with an expiry bound) selects exactly the tokens whose
/// rows in the unfiltered inventory show that flag (the database narrows the rows by what
/// the flags imply of their columns first: it must never leave one out). Returns how many
/// tokens carried each flag, so a caller can check its set-up exercised them.
async fn flag_filters_keep_what_the_rows_show(app: &App, token: &str) -> Vec<(&'static str, usize)> {
    let (every, _) = listed(app, token, INVENTORY, "per_page=1000").await;
    let ids = |tokens: &[&Value]| tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect::<Vec<_>>();
    let flag_names = [
        "broad_legacy_scope",
        "write_everywhere",
        "unused_permissions",
        "never_used",
        "expiring_soon",
        "exceeds_policy",
    ];
    let bound = "2026-12-06";
    let before = patgate_core::Timestamp::parse_date(bound).unwrap();
    let mut counts = Vec::new();
    for flag in flag_names {
        let carrying: Vec<&Value> = every.iter().filter(|t| flags(t).contains(&flag)).collect();
        counts.push((flag, carrying.len()));
        for (extra, keep) in [
            ("", (|_: &Value| true) as fn(&Value) -> bool),
            ("&kind=legacy", |t: &Value| t["kind"] == "legacy"),
            ("&kind=fine_grained", |t: &Value| t["kind"] == "fine_grained"),
        ] {
            let (kept, _) = listed(app, token, INVENTORY, &format!("per_page=1000&flag={flag}{extra}")).await;
            let expected: Vec<&Value> = carrying.iter().copied().filter(|t| keep(t)).collect();
            assert_eq!(ids(&kept.iter().collect::<Vec<_>>()), ids(&expected), "flag={flag}{extra}");
        }
        let query = format!("per_page=1000&flag={flag}&expires_before={bound}");
        let (kept, _) = listed(app, token, INVENTORY, &query).await;
        let expected: Vec<&Value> = carrying
            .iter()
            .copied()
            .filter(|t| {
                t["expires_at"]
                    .as_str()
                    .is_some_and(|at| patgate_core::Timestamp::parse_date(at).is_some_and(|at| at < before))
            })
            .collect();
        assert_eq!(ids(&kept.iter().collect::<Vec<_>>()), ids(&expected), "{query}");
    }
    counts
}

#[tokio::test]
async fn a_flag_filter_over_many_candidates_reads_every_row() {
    // Beyond 5,000 candidate rows a flag filter reads every row of the owner instead of the
    // candidates by id: the same tokens either way.
    let app = App::new().await;
    let bob = app.shared.engine().index.directory.user_by_name("bob").unwrap().id;
    let format = patgate_core::TokenFormat::new("").unwrap();
    let key = patgate_core::DigestKey::new(&[9; 32]).unwrap();
    let legacy = patgate_core::Authority::Legacy([patgate_core::scope::LegacyScope::ReadApi].into_iter().collect());
    let expires = patgate_core::Timestamp::parse_date("2027-06-30");
    for n in 0..5_001 {
        let plain = format.generate(patgate_core::TokenKind::Legacy).unwrap();
        let token = patgate_store::NewToken {
            owner: bob,
            name: format!("bulk {n}"),
            description: String::new(),
            digest: key.digest_plain(&plain),
            display_prefix: plain.display_prefix(),
            authority: legacy.clone(),
            allowed_ips: Vec::new(),
            created_at: patgate_core::Timestamp(start()),
            expires_at: expires,
        };
        let audit = patgate_store::Audit::new("token_created", patgate_store::Actor::default(), token.created_at);
        app.shared.store.create_token(&token, audit).await.unwrap();
    }
    let total = |reply: &Reply| reply.header("x-total").unwrap().parse::<usize>().unwrap();
    let (_, every) = listed(&app, &app.admin, INVENTORY, "user=bob&per_page=10").await;
    let (_, legacy) = listed(&app, &app.admin, INVENTORY, "user=bob&per_page=10&kind=legacy").await;
    assert!(total(&legacy) > 5_000 && total(&every) > total(&legacy), "{} {}", total(&every), total(&legacy));
    // Nothing of bob's has been used: every token is `never_used`, the legacy ones counted
    // over the candidates' limit too.
    let (first, never) = listed(&app, &app.admin, INVENTORY, "user=bob&per_page=10&flag=never_used").await;
    assert_eq!((total(&never), first.len()), (total(&every), 10));
    let (_, never) = listed(&app, &app.admin, INVENTORY, "user=bob&per_page=10&flag=never_used&kind=legacy").await;
    assert_eq!(total(&never), total(&legacy));
    let (_, broad) = listed(&app, &app.admin, INVENTORY, "user=bob&flag=broad_legacy_scope").await;
    assert_eq!(total(&broad), 0);
}

/// alice's demo token in her table (as the admin sees it: her token cannot read tokens).
async fn alices(app: &App) -> Value {
    let (tokens, _) = listed(app, &app.admin, TOKENS, "user=alice").await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    tokens[0].clone()
}

async fn permission_uses_drive_the_unused_permissions_flag(backend: Backend) {
    let app = App::on(&backend).await;
    // Before any use, the token is only `never_used`…
    let before = alices(&app).await;
    assert_eq!(flags(&before), ["never_used"], "{before}");
    assert!(before.get("unused_permissions").is_none(), "{before}");

    // …after a pull, the push permission it holds and has not used is listed.
    app.set_now(start() + 60);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    // A denied request uses nothing.
    assert_eq!(app.reason(&app.alice, "DELETE", &format!("{API_REGISTRY}/1")).await, "insufficient_scope");
    jobs::flush_usage(&app.shared).await.unwrap();
    let token = alices(&app).await;
    assert_eq!(flags(&token), ["unused_permissions"], "{token}");
    assert_eq!(token["unused_permissions"], json!(["container_registry:create"]));
    assert_eq!(token["last_used_at"], json!(format!("{:?}", patgate_core::Timestamp(start() + 60))));

    // Both used: no flag. The counts add up over flushes.
    assert_eq!(app.reason(&app.alice, "POST", REGISTRY_RULES).await, "allowed");
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    jobs::flush_usage(&app.shared).await.unwrap();
    assert_eq!(flags(&alices(&app).await), Vec::<&str>::new());
    let id = alices(&app).await["id"].as_u64().unwrap();
    let uses = app.shared.store.permission_uses(None, Some(patgate_core::TokenId(id)), patgate_core::Timestamp(0));
    let uses = uses.await.unwrap();
    let counted: Vec<(String, u64)> = {
        let engine = app.shared.engine();
        uses.iter().map(|(_, each)| (engine.resources.permission_name(each.permission), each.uses)).collect()
    };
    assert!(counted.contains(&("container_registry:read".to_owned(), 2)), "{counted:?}");
    assert!(counted.contains(&("container_registry:create".to_owned(), 1)), "{counted:?}");

    // The window (30 days by default) counts from the last use: the pull (second 60) and
    // the push drop out one second after 30 days; the window can be widened.
    app.set_now(start() + 60 + 30 * DAY);
    assert_eq!(flags(&alices(&app).await), Vec::<&str>::new());
    app.set_now(start() + 61 + 30 * DAY);
    let token = alices(&app).await;
    assert_eq!(flags(&token), ["unused_permissions"], "{token}");
    assert_eq!(token["unused_permissions"], json!(["container_registry:create", "container_registry:read"]));
    let reply = app.call("PUT", SETTINGS, Some(&app.admin), Some(&json!({ "usage_window_days": 0 }))).await;
    reply.expect_error(422, "invalid_request");
    app.call("PUT", SETTINGS, Some(&app.admin), Some(&json!({ "usage_window_days": 31 }))).await.expect(200);
    assert_eq!(flags(&alices(&app).await), Vec::<&str>::new());

    // Legacy tokens list no unused permissions (their scopes are not permissions).
    assert_eq!(app.reason(&app.dave, "GET", API_REGISTRY).await, "allowed");
    jobs::flush_usage(&app.shared).await.unwrap();
    let (daves, _) = listed(&app, &app.dave, TOKENS, "").await;
    assert_eq!(flags(&daves[0]), Vec::<&str>::new(), "{daves:?}");

    // Unused permissions again (the window back to 30 days), against never used.
    app.call("PUT", SETTINGS, Some(&app.admin), Some(&json!({ "usage_window_days": 30 }))).await.expect(200);
    let counts = flag_filters_keep_what_the_rows_show(&app, &app.admin).await;
    assert!(
        counts.contains(&("unused_permissions", 1)) && counts.iter().any(|(flag, n)| *flag == "never_used" && *n > 0)
    );
}

async fn flags_mark_broad_write_everywhere_expiring_and_over_policy_tokens(backend: Backend) {
    let app = App::on(&backend).await;
    let grants = |reach: &str, actions: &[&str]| {
        json!([{ "reach": reach, "projects": if reach == "selected" { json!(["acme/platform/api"]) } else { json!([]) },
                 "permissions": { "issue": actions } }])
    };
    for (name, body) in [
        ("api", json!({ "scopes": ["api"], "expires_at": "2027-06-30" })),
        ("write_repository", json!({ "scopes": ["write_repository"], "expires_at": "2027-06-30" })),
        ("read_api", json!({ "scopes": ["read_api", "read_user"], "expires_at": "2027-06-30" })),
        (
            "write everywhere",
            json!({ "grants": grants("all_memberships", &["read", "update"]), "expires_at": "2027-06-30" }),
        ),
        ("read everywhere", json!({ "grants": grants("all_memberships", &["read"]), "expires_at": "2027-06-30" })),
        ("write one project", json!({ "grants": grants("selected", &["create"]), "expires_at": "2027-06-30" })),
        // start() is 2026-11-28 12:00: 7 days and 12 hours, 6 days and 12 hours.
        ("in 8 days", json!({ "grants": grants("selected", &["read"]), "expires_at": "2026-12-06" })),
        ("in 7 days", json!({ "grants": grants("selected", &["read"]), "expires_at": "2026-12-05" })),
    ] {
        let mut body = body;
        body["name"] = json!(name);
        app.mint_for("bob", body).await;
    }
    let (tokens, _) = listed(&app, &app.admin, TOKENS, "user=bob&sort=id").await;
    let shown: Vec<(&str, Vec<&str>)> = tokens.iter().map(|t| (t["name"].as_str().unwrap(), flags(t))).collect();
    let demo = "bob: issues read across all his memberships";
    assert_eq!(
        shown,
        [
            ("demo fine-grained", vec!["never_used"]),
            ("api", vec!["broad_legacy_scope", "never_used"]),
            ("write_repository", vec!["broad_legacy_scope", "never_used"]),
            ("read_api", vec!["never_used"]),
            ("write everywhere", vec!["write_everywhere", "never_used"]),
            ("read everywhere", vec!["never_used"]),
            ("write one project", vec!["never_used"]),
            ("in 8 days", vec!["never_used"]),
            ("in 7 days", vec!["never_used", "expiring_soon"]),
        ],
        "{tokens:?} ({demo})"
    );
    // The edge: exactly 7 days before expiry is soon; a second earlier is not.
    let in_8 = tokens.iter().find(|t| t["name"] == "in 8 days").unwrap()["id"].as_u64().unwrap();
    let expires_8 = patgate_core::Timestamp::parse_date("2026-12-06").unwrap().0;
    for (now, soon) in [(expires_8 - 7 * DAY - 1, false), (expires_8 - 7 * DAY, true), (expires_8 - 1, true)] {
        app.set_now(now);
        let shown = app.call("GET", &format!("{TOKENS}/{in_8}"), Some(&app.admin), None).await.json();
        assert_eq!(flags(&shown).contains(&"expiring_soon"), soon, "at {now}: {shown}");
    }
    // Expired: no longer soon.
    app.set_now(expires_8);
    let shown = app.call("GET", &format!("{TOKENS}/{in_8}"), Some(&app.admin), None).await.json();
    assert_eq!((shown["state"].as_str(), flags(&shown)), (Some("expired"), vec!["never_used"]));
    app.set_now(start());

    // A lowered cap: tokens beyond it are blocked and flagged until rotated. The reviewer
    // uses a fine-grained admin token within every policy below.
    let reviewer = json!({ "name": "review", "expires_at": "2027-02-01", "grants": [{ "reach": "instance",
        "permissions": { "admin_user": ["read", "update"], "admin_setting": ["read", "update"] } }] });
    let made = app.call("POST", "/api/v1/user/personal_access_tokens", Some(&app.admin), Some(&reviewer)).await;
    let reviewer = made.expect(201).json()["token"].as_str().unwrap().to_owned();
    app.call("PUT", SETTINGS, Some(&reviewer), Some(&json!({ "max_lifetime_days": 100 }))).await.expect(200);
    let (over, _) = listed(&app, &reviewer, INVENTORY, "user=bob&flag=exceeds_policy").await;
    assert_eq!(
        names(&over),
        ["api", "write_repository", "read_api", "write everywhere", "read everywhere", "write one project"]
    );
    assert!(over.iter().all(|t| t["state"] == "blocked" && t["blocked_reason"] == "lifetime_policy"), "{over:?}");
    // Legacy use cut off: legacy tokens exceed the policy too.
    let legacy_off = json!({ "max_lifetime_days": 365, "legacy_use_disabled_from": "2026-11-01" });
    app.call("PUT", SETTINGS, Some(&reviewer), Some(&legacy_off)).await.expect(200);
    let (over, _) = listed(&app, &reviewer, INVENTORY, "user=bob&flag=exceeds_policy").await;
    assert_eq!(names(&over), ["api", "write_repository", "read_api"]);
    assert!(over.iter().all(|t| t["blocked_reason"] == "legacy_disabled"), "{over:?}");

    // The database's state filter (owner's state joined, policy as conditions) keeps exactly
    // the tokens whose rows show that state: everyone's, with a blocked owner among them.
    app.call("POST", "/api/v1/admin/users/bob/block", Some(&reviewer), None).await.expect(204);
    let (every, _) = listed(&app, &reviewer, INVENTORY, "per_page=1000").await;
    let ids = |tokens: &[Value]| tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect::<Vec<_>>();
    for state in ["active", "blocked", "expired", "revoked"] {
        let (kept, _) = listed(&app, &reviewer, INVENTORY, &format!("per_page=1000&state={state}")).await;
        let shown: Vec<Value> = every.iter().filter(|t| t["state"] == state).cloned().collect();
        assert_eq!(ids(&kept), ids(&shown), "state={state}");
        if state == "active" || state == "blocked" {
            assert!(!kept.is_empty(), "state={state} selects something here");
        }
    }
    let (bobs, _) = listed(&app, &reviewer, INVENTORY, "user=bob&state=active").await;
    assert!(bobs.is_empty(), "a blocked owner's tokens are not active: {bobs:?}");

    // And the flag filters keep exactly what the rows show, every flag but
    // `unused_permissions` present (see `permission_uses_drive_the_unused_permissions_flag`).
    app.call("POST", "/api/v1/admin/users/bob/unblock", Some(&reviewer), None).await.expect(204);
    let counts = flag_filters_keep_what_the_rows_show(&app, &reviewer).await;
    for (flag, count) in counts {
        assert!(flag == "unused_permissions" || count > 0, "no token carries {flag}");
    }
}

async fn filters_sort_and_pages(backend: Backend) {
    let app = App::on(&backend).await;
    for (index, name) in ["zeta", "alpha", "Mid", "beta", "omega"].into_iter().enumerate() {
        let expires = format!("2027-0{}-01", index + 1);
        app.mint_for("carol", json!({ "name": name, "scopes": ["read_api"], "expires_at": expires })).await;
    }
    let carol = "user=carol";
    let (all, reply) = listed(&app, &app.admin, TOKENS, carol).await;
    assert_eq!(names(&all), ["zeta", "alpha", "Mid", "beta", "omega"]);
    assert_eq!((reply.header("x-total"), reply.header("x-total-pages")), (Some("5"), Some("1")));
    assert_eq!((reply.header("x-page"), reply.header("x-next-page")), (Some("1"), Some("")));

    // Sorting, both ways; name sorts by bytes.
    let (sorted, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&sort=name")).await;
    assert_eq!(names(&sorted), ["Mid", "alpha", "beta", "omega", "zeta"]);
    let (sorted, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&sort=-expires_at")).await;
    assert_eq!(names(&sorted), ["omega", "beta", "Mid", "alpha", "zeta"]);

    // Pages of two: 3 pages, the last one short, then an empty page past the end.
    let page = |n: u32| format!("{carol}&sort=name&per_page=2&page={n}");
    let (first, reply) = listed(&app, &app.admin, TOKENS, &page(1)).await;
    assert_eq!(
        (names(&first), reply.header("x-next-page"), reply.header("x-total-pages")),
        (vec!["Mid", "alpha"], Some("2"), Some("3"))
    );
    let (last, reply) = listed(&app, &app.admin, TOKENS, &page(3)).await;
    assert_eq!((names(&last), reply.header("x-next-page")), (vec!["zeta"], Some("")));
    let (past, reply) = listed(&app, &app.admin, TOKENS, &page(4)).await;
    assert_eq!((past.len(), reply.header("x-total")), (0, Some("5")));

    // Expiry window (before is exclusive), search, state and kind.
    let (window, _) =
        listed(&app, &app.admin, TOKENS, &format!("{carol}&expires_after=2027-02-01&expires_before=2027-04-01")).await;
    assert_eq!(names(&window), ["alpha", "Mid"]);
    let (found, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&search=ET")).await;
    assert_eq!(names(&found), ["zeta", "beta"]);
    let zeta = all[0]["id"].as_u64().unwrap();
    app.call("DELETE", &format!("{TOKENS}/{zeta}"), Some(&app.admin), None).await.expect(204);
    let (revoked, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&state=revoked")).await;
    assert_eq!(names(&revoked), ["zeta"]);
    let (live, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&state=active,blocked&kind=legacy")).await;
    assert_eq!(names(&live), ["alpha", "Mid", "beta", "omega"]);
    let (none, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&kind=fine_grained")).await;
    assert!(none.is_empty(), "{none:?}");

    // Last-used window: never-used tokens match neither bound.
    let alpha =
        app.mint_for("carol", json!({ "name": "used", "scopes": ["read_api"], "expires_at": "2027-06-30" })).await;
    let secret = alpha["token"].as_str().unwrap().to_owned();
    app.set_now(start() + DAY);
    assert_eq!(app.reason(&secret, "GET", "/api/v4/user").await, "allowed");
    jobs::flush_usage(&app.shared).await.unwrap();
    let (recent, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&used_after={}", start() + DAY)).await;
    assert_eq!(names(&recent), ["used"]);
    let (older, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&used_before={}", start() + DAY)).await;
    assert!(older.is_empty(), "{older:?}");
    let (never, _) = listed(&app, &app.admin, TOKENS, &format!("{carol}&flag=never_used&state=active")).await;
    assert_eq!(names(&never), ["alpha", "Mid", "beta", "omega"]);
}

async fn the_inventory_is_for_administrators_and_bad_filters_are_named(backend: Backend) {
    let app = App::on(&backend).await;
    let (every, reply) = listed(&app, &app.admin, INVENTORY, "sort=id").await;
    let owners: Vec<&str> = every.iter().map(|t| t["user"].as_str().unwrap()).collect();
    assert_eq!(owners, ["admin", "alice", "bob", "dave"], "{every:?}");
    assert_eq!(reply.header("x-total"), Some("4"));
    let (legacy, _) = listed(&app, &app.admin, INVENTORY, "flag=broad_legacy_scope").await;
    assert_eq!(legacy.iter().map(|t| t["user"].as_str().unwrap()).collect::<Vec<_>>(), ["admin"]);
    let (bobs, _) = listed(&app, &app.admin, INVENTORY, "user=bob").await;
    assert_eq!(bobs.len(), 1);
    app.call("GET", INVENTORY, Some(&app.alice), None).await.expect(403);
    app.call("GET", &format!("{TOKENS}?user=bob"), Some(&app.bob), None).await.expect(403);
    app.call("GET", &format!("{INVENTORY}?user=nobody"), Some(&app.admin), None).await.expect_error(404, "not_found");

    for (query, names) in [
        ("state=gone", "`state`"),
        ("flag=risky", "`flag`"),
        ("kind=classic", "`kind`"),
        ("sort=secret", "`sort`"),
        ("per_page=0", "`per_page`"),
        ("per_page=1001", "`per_page`"),
        ("page=0", "`page`"),
        ("expires_before=tomorrow", "`expires_before`"),
        ("used_after=2026-13-01", "`used_after`"),
        ("colour=red", "colour"),
        ("page=minus", "page"),
    ] {
        let reply = app.call("GET", &format!("{INVENTORY}?{query}"), Some(&app.admin), None).await;
        let body = reply.expect_error(422, "invalid_request");
        assert!(body["message"].as_str().unwrap().contains(names), "{query}: {body}");
    }
}

const ISSUES: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/issues";

async fn a_token_is_narrowed_to_what_it_used(backend: Backend) {
    let app = App::on(&backend).await;
    let bob = app.call("GET", &format!("{TOKENS}?user=bob"), Some(&app.admin), None).await.json()[0].clone();
    let id = bob["id"].as_u64().unwrap();
    // Nothing used yet: nothing to narrow to.
    let nothing = suggestion_of(&app, id).await;
    assert_eq!((nothing["grants"].clone(), nothing["narrower"].clone()), (json!([]), json!(false)), "{nothing}");
    app.call("POST", &format!("{TOKENS}/{id}/narrow"), Some(&app.admin), None).await.expect_error(409, "conflict");

    // bob reads issues of one project, twice.
    app.set_now(start() + 60);
    for _ in 0..2 {
        assert_eq!(app.reason(&app.bob, "GET", ISSUES).await, "allowed");
    }
    jobs::flush_usage(&app.shared).await.unwrap();
    let found = suggestion_of(&app, id).await;
    assert_eq!(
        found["grants"],
        json!([{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } }]),
        "{found}"
    );
    assert_eq!(
        found["removed"],
        json!({ "permissions": ["merge_request:read"], "reaches": ["all_memberships"], "scopes": [] })
    );
    assert_eq!(found["observed"][0]["permission"], "issue:read");
    assert_eq!(found["observed"][0]["uses"], 2);
    assert_eq!(found["observed"][0]["boundary"]["path"], "acme/platform/api");
    assert_eq!((found["narrower"].clone(), found["left_out"].clone()), (json!(true), json!([])));
    // Someone else's token is not theirs to see.
    app.call("GET", &format!("{TOKENS}/{id}/suggestion"), Some(&app.dave), None).await.expect(404);

    // Replace it: a new secret with the suggested grants; the old one is revoked.
    let narrowed = app.call("POST", &format!("{TOKENS}/{id}/narrow"), Some(&app.admin), None).await;
    let narrowed = narrowed.expect(200).json();
    assert_eq!(narrowed["grants"], found["grants"]);
    assert_eq!((narrowed["previous_id"].as_u64(), narrowed["name"].clone()), (Some(id), bob["name"].clone()));
    let secret = narrowed["token"].as_str().unwrap().to_owned();
    assert_eq!(app.reason(&secret, "GET", ISSUES).await, "allowed");
    assert_eq!(
        app.reason(&secret, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests").await,
        "insufficient_scope"
    );
    assert_eq!(app.reason(&secret, "GET", "/api/v4/projects/acme%2Fhandbook/issues").await, "outside_reach");
    assert_eq!(app.reason(&app.bob, "GET", ISSUES).await, "revoked");
    let audit = app.call("GET", "/api/v1/audit_events?type=token_narrowed", Some(&app.admin), None).await.json();
    let event = &audit["events"][0];
    let new_id = narrowed["id"].as_u64().unwrap();
    assert_eq!((event["token_id"].as_u64(), event["user"].as_str()), (Some(new_id), Some("bob")), "{audit}");
    assert_eq!(event["details"]["previous"].as_u64(), Some(id), "{audit}");
    assert_eq!(event["details"]["removed_permissions"], json!(["merge_request:read"]), "{audit}");
    // Narrowed already: the new token holds exactly what it used.
    assert_eq!(app.reason(&secret, "GET", ISSUES).await, "allowed");
    jobs::flush_usage(&app.shared).await.unwrap();
    let again = app.call("GET", &format!("{TOKENS}/{new_id}/suggestion"), Some(&app.admin), None).await.json();
    assert_eq!(again["narrower"], false, "{again}");
    app.call("POST", &format!("{TOKENS}/{new_id}/narrow"), Some(&app.admin), None).await.expect_error(409, "conflict");
}

async fn a_legacy_token_is_replaced_by_the_fine_grained_token_it_needs(backend: Backend) {
    let app = App::on(&backend).await;
    let dave = app.call("GET", &format!("{TOKENS}?user=dave"), Some(&app.admin), None).await.json()[0].clone();
    let id = dave["id"].as_u64().unwrap();
    app.set_now(start() + 60);
    assert_eq!(app.reason(&app.dave, "GET", API_REGISTRY).await, "allowed");
    assert_eq!(app.reason(&app.dave, "GET", ISSUES).await, "allowed");
    jobs::flush_usage(&app.shared).await.unwrap();
    // dave, as himself (read_api may read his own tokens).
    let found = app.call("GET", &format!("{TOKENS}/{id}/suggestion"), Some(&app.dave), None).await.expect(200).json();
    assert_eq!(
        found["grants"],
        json!([{ "reach": "selected", "projects": ["acme/platform/api"],
                 "permissions": { "container_registry": ["read"], "issue": ["read"] } }]),
        "{found}"
    );
    assert_eq!(found["removed"]["scopes"], json!(["read_api"]));
    // read_api cannot rotate (a write): the admin replaces it.
    app.call("POST", &format!("{TOKENS}/{id}/narrow"), Some(&app.dave), None).await.expect(403);
    let narrowed = app.call("POST", &format!("{TOKENS}/{id}/narrow"), Some(&app.admin), None).await.expect(200).json();
    assert_eq!(
        (narrowed["kind"].as_str(), narrowed["grants"].clone()),
        (Some("fine_grained"), found["grants"].clone())
    );
    let secret = narrowed["token"].as_str().unwrap();
    assert!(secret.starts_with("pgfgt-"), "a fine-grained token's prefix");
    assert_eq!(app.reason(secret, "GET", API_REGISTRY).await, "allowed");
    // The owner's own profile is no public page: an anonymous caller has no self, so only a
    // grant with reach `user` opens `GET /user` (docs/decisions.md, "Judged as anonymous").
    assert_eq!(app.reason(secret, "GET", "/api/v4/user").await, "outside_reach", "the owner's profile is not public");
    assert_eq!(
        app.reason(secret, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests").await,
        "insufficient_scope"
    );
}

/// The suggestion for token `id`, as the admin sees it.
async fn suggestion_of(app: &App, id: u64) -> Value {
    app.call("GET", &format!("{TOKENS}/{id}/suggestion"), Some(&app.admin), None).await.expect(200).json()
}
