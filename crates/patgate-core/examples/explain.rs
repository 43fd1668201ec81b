//! Decides a few requests against a small demo directory and prints each answer.

#![expect(clippy::print_stdout, reason = "an example prints its results")]

use patgate_core::{
    Authority, BoundaryRef, DigestKey, Directory, Engine, Grant, Index, Locator, MembershipTarget, PermissionSet,
    Reach, Request, Resources, Role, ScopeSet, Timestamp, TokenFormat, TokenId, TokenKind, TokenRecord, UserId,
    UserState, Visibility, scope::LegacyScope,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let resources = Resources::builtin()?;
    let mut directory = Directory::new();
    directory.upsert_user(UserId(1), "alice", UserState::Active, false)?;
    directory.insert_group(patgate_core::GroupId(1), "acme", Visibility::Private)?;
    directory.insert_group(patgate_core::GroupId(2), "acme/platform", Visibility::Private)?;
    directory.insert_project(patgate_core::ProjectId(1), "acme/platform/api", Visibility::Private)?;
    directory.insert_project(patgate_core::ProjectId(2), "acme/web", Visibility::Public)?;
    directory.set_membership(UserId(1), MembershipTarget::Group(patgate_core::GroupId(1)), Role::Developer)?;

    let format = TokenFormat::new("")?;
    let key = DigestKey::new(b"demo key: never use a constant key in production!")?;
    let mut index = Index::new();
    index.directory = directory;

    let registry = resources.id("container_registry")?;
    let fine = format.generate(TokenKind::FineGrained)?;
    let grant = Grant {
        reach: Reach::Selected { projects: [patgate_core::ProjectId(1)].into(), groups: [].into() },
        permissions: PermissionSet::new([(registry, "cr".parse::<Letters>()?.0)]),
    };
    index.insert_token(
        key.address_plain(&fine),
        TokenRecord {
            id: TokenId(1),
            owner: UserId(1),
            authority: Authority::FineGrained(Box::new([grant])),
            expires_at: Timestamp::parse_date("2027-06-01"),
            created_at: Timestamp(0),
            revoked_at: None,
            allowed_ips: Box::new([]),
        },
    )?;
    let legacy = format.generate(TokenKind::Legacy)?;
    index.insert_token(
        key.address_plain(&legacy),
        TokenRecord {
            id: TokenId(2),
            owner: UserId(1),
            authority: Authority::Legacy(ScopeSet::EMPTY.with(LegacyScope::ReadApi)),
            expires_at: Timestamp::parse_date("2027-06-01"),
            created_at: Timestamp(0),
            revoked_at: None,
            allowed_ips: Box::new([]),
        },
    )?;
    let engine = Engine { resources, index, format, key, policy: Default::default() };
    let now = Timestamp::parse_date("2026-11-28").unwrap_or_default();

    let ask = |label: &str, token: &str, permission: &str, boundary: BoundaryRef<'_>| {
        let permission = match engine.resources.permission(permission) {
            Ok(permission) => permission,
            Err(error) => return println!("{label}: {error}"),
        };
        let decision = engine.decide_presented(token, &Request::api(&[permission], boundary), now);
        match decision.outcome {
            Ok(basis) => println!("{label:<58} allow ({basis:?})"),
            Err(reason) => println!(
                "{label:<58} deny {} {}: {}",
                reason.status(),
                reason.code(),
                reason.message(&engine.resources)
            ),
        }
    };
    let api = BoundaryRef::Project(Locator::Path("acme/platform/api"));
    let web = BoundaryRef::Project(Locator::Path("acme/web"));
    println!("fine-grained token {:?}: container_registry create+read on acme/platform/api", fine);
    ask("push an image to acme/platform/api", fine.expose_secret(), "container_registry:create", api);
    ask("delete an image in acme/platform/api", fine.expose_secret(), "container_registry:delete", api);
    ask("read issues of acme/platform/api", fine.expose_secret(), "issue:read", api);
    ask("read issues of public acme/web (outside reach)", fine.expose_secret(), "issue:read", web);
    ask("create an issue in acme/web (outside reach)", fine.expose_secret(), "issue:create", web);
    ask(
        "read a project that does not exist",
        fine.expose_secret(),
        "project:read",
        BoundaryRef::Project(Locator::Path("acme/secret")),
    );
    println!("legacy token {:?}: read_api", legacy);
    ask("read merge requests of acme/platform/api", legacy.expose_secret(), "merge_request:read", api);
    ask("create a merge request in acme/platform/api", legacy.expose_secret(), "merge_request:create", api);
    ask("a string that is not a token", "pgfgt-not-a-real-token", "issue:read", api);
    Ok(())
}

struct Letters(patgate_core::ActionSet);

impl std::str::FromStr for Letters {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        patgate_core::ActionSet::from_letters(text).map(Letters).ok_or_else(|| format!("bad actions `{text}`"))
    }
}
