//! patgate's pure domain: the directory, resources and actions, fine-grained grants and
//! legacy scopes, the token format, the in-memory index and the decision.
//!
//! Nothing here reads a clock, touches a database or does I/O beyond drawing random
//! bytes for new tokens: time is a parameter, storage feeds [`index::Index`], and
//! [`decision::decide`] is a pure, default-deny function.

pub mod catalog;
pub mod decision;
pub mod directory;
pub mod engine;
pub mod grant;
pub mod index;
pub mod net;
pub mod policy;
pub mod resource;
pub mod role;
pub mod scope;
pub mod suggest;
mod tag_table;
pub mod time;
pub mod token;
pub mod validate;
mod warm;

pub use decision::{
    Basis, Boundary, BoundaryRef, Decision, DenyReason, Operation, Request, Surface, authenticate, decide, decide_under,
};
pub use directory::{
    Directory, DirectoryError, Group, GroupId, Locator, MembershipTarget, Namespace, Project, ProjectId, User, UserId,
    UserLocator, UserState, Visibility,
};
pub use engine::Engine;
pub use grant::{Grant, Reach, ReachKind};
pub use index::{Index, TokenLookup};
pub use policy::{LifetimeExcess, Policy};
pub use resource::{Action, ActionSet, BoundaryKind, Permission, PermissionSet, ResourceId, Resources};
pub use role::{Requirement, Role};
pub use scope::{LegacyScope, ScopeSet};
pub use suggest::{LeftOut, LeftOutReason, Observed, Suggestion, suggest};
pub use time::Timestamp;
pub use token::{
    Authority, DigestKey, PlainToken, TokenAddress, TokenDigest, TokenFormat, TokenHint, TokenId, TokenKind,
    TokenRecord,
};
