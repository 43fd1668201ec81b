//! The endpoint catalog: every REST endpoint patgate knows, as data, compiled into a
//! router that turns `PUT /api/v4/projects/acme%2Fapi/merge_requests/7` into
//! `merge_request:update` at project `acme/api`.
//!
//! Files under `catalog/endpoints/` hold one entry per line:
//! `METHOD  PATH  PERMISSIONS  BOUNDARY  [FLAGS]` — see `catalog/endpoints/FORMAT.md`.

mod docs;
mod parse;
mod router;

use crate::{
    decision::{BoundaryRef, Operation, Request, Surface},
    directory::{Locator, UserLocator},
    resource::{Permission, Resources},
};

pub use docs::{render_coverage, render_permissions_markdown};
pub use parse::CatalogError;
pub use router::{Match, Params};

/// The endpoint files compiled into patgate, as (file name, text).
pub const BUILTIN_ENDPOINT_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_endpoints.rs"));

/// An HTTP method the catalog distinguishes (`HEAD` is matched as `GET`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Every method, in the order docs list them.
    pub const ALL: [Method; 5] = [Method::Get, Method::Post, Method::Put, Method::Patch, Method::Delete];

    /// Parses a request method; `HEAD` is `GET`. Case-sensitive, as HTTP is.
    pub fn from_request(method: &str) -> Option<Method> {
        match method {
            "GET" | "HEAD" => Some(Method::Get),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Whether the method only reads (what legacy `read_api` allows).
    pub fn is_read_only(self) -> bool {
        self == Method::Get
    }
}

/// Where an entry's boundary comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoundarySource {
    /// The project named by path parameter number `0` (id or URL-encoded full path).
    Project(u8),
    /// The group named by path parameter number `0`.
    Group(u8),
    /// The user named by path parameter number `0` (id or username).
    User(u8),
    /// The caller (`/user/…`).
    SelfUser,
    Instance,
}

/// What an endpoint needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Open to any valid token.
    Always,
    /// Every one of these permissions at the boundary.
    /// INVARIANT: not empty, each exists at the boundary's kind.
    Permissions(PermissionList),
}

/// The permissions an endpoint needs, held in its entry up to [`PermissionList::HERE`] (no
/// catalogued endpoint needs more; nearly all need one): the decision reads them with the
/// entry it routed to, not behind one more pointer (a cache miss a request, once the
/// catalog's lines have left the cache between requests). Longer lists go to the heap.
#[derive(Clone)]
pub struct PermissionList(Held);

#[derive(Clone)]
enum Held {
    /// INVARIANT: `len` ≤ `HERE`; the items past `len` repeat the first and are never read.
    Here {
        items: [Permission; PermissionList::HERE],
        len: u8,
    },
    Spilled(Box<[Permission]>),
}

impl PermissionList {
    /// Permissions held in place.
    pub const HERE: usize = 4;

    /// The list of `permissions`, in place when they fit.
    pub fn new(permissions: &[Permission]) -> PermissionList {
        match (permissions.first(), u8::try_from(permissions.len())) {
            (Some(first), Ok(len)) if permissions.len() <= Self::HERE => {
                let mut items = [*first; Self::HERE];
                items[..permissions.len()].copy_from_slice(permissions);
                PermissionList(Held::Here { items, len })
            }
            _ => PermissionList(Held::Spilled(permissions.into())),
        }
    }
}

impl std::ops::Deref for PermissionList {
    type Target = [Permission];

    fn deref(&self) -> &[Permission] {
        match &self.0 {
            Held::Here { items, len } => &items[..usize::from(*len)],
            Held::Spilled(items) => items,
        }
    }
}

impl PartialEq for PermissionList {
    fn eq(&self, other: &PermissionList) -> bool {
        **self == **other
    }
}

impl Eq for PermissionList {}

impl std::fmt::Debug for PermissionList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One catalogued endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub method: Method,
    /// GitLab's own template, without `/api/v4`: `/projects/:id/merge_requests/:merge_request_iid`.
    pub template: Box<str>,
    /// The template's parameter names, in path order.
    pub params: Box<[Box<str>]>,
    pub needs: Needs,
    pub boundary: BoundarySource,
    /// The endpoint acts on the presenting token itself.
    pub own_token: bool,
    /// Where the entry was declared.
    pub file: Box<str>,
    pub line: usize,
}

impl Entry {
    /// The permissions the entry needs (empty for `always`).
    pub fn permissions(&self) -> &[Permission] {
        match &self.needs {
            Needs::Always => &[],
            Needs::Permissions(permissions) => permissions,
        }
    }
}

/// The compiled endpoint catalog.
#[derive(Clone, Debug)]
pub struct Catalog {
    entries: Vec<Entry>,
    router: router::Router,
}

/// The prefix of the guarded REST API.
pub const API_PREFIX: &str = "/api/v4";

/// Room for decoding a URL-encoded path parameter without allocating.
#[derive(Debug)]
pub struct DecodeBuffer([u8; 512]);

impl Default for DecodeBuffer {
    fn default() -> DecodeBuffer {
        DecodeBuffer([0; 512])
    }
}

impl Catalog {
    /// The catalog compiled into patgate (`catalog/endpoints/*.txt`).
    pub fn builtin(resources: &Resources) -> Result<Catalog, CatalogError> {
        Catalog::parse(resources, BUILTIN_ENDPOINT_FILES.iter().copied())
    }

    /// Parses and compiles catalog files; errors name the file and line.
    pub fn parse<'f>(
        resources: &Resources,
        files: impl IntoIterator<Item = (&'f str, &'f str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut entries = Vec::new();
        for (file, text) in files {
            parse::parse_file(resources, file, text, &mut entries)?;
        }
        let router = router::Router::build(&entries)?;
        Ok(Catalog { entries, router })
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Matches a method and a path as the client sent it (`/api/v4/…`, query included).
    /// An [ambiguous](ambiguous_path) path matches nothing.
    pub fn find<'p>(&self, method: &str, path: &'p str) -> Option<Match<'_, 'p>> {
        let path = without_query(path);
        if ambiguous_path(path) {
            return None;
        }
        self.find_method(Method::from_request(method)?, path)
    }

    // `path` without its query, and not ambiguous.
    fn find_method<'p>(&self, method: Method, path: &'p str) -> Option<Match<'_, 'p>> {
        let rest = path.strip_prefix(API_PREFIX)?;
        self.router.find(&self.entries, method, rest)
    }

    /// Turns a client's request into what the decision judges. `buffer` holds a decoded
    /// path parameter (`acme%2Fapi` → `acme/api`) for as long as the request lives.
    pub fn request<'c, 'p: 'c>(&'c self, method: &str, path: &'p str, buffer: &'c mut DecodeBuffer) -> Request<'c> {
        self.request_and_entry(method, path, buffer).0
    }

    /// [`Catalog::request`] with the matched entry, if any (one match, not two).
    pub fn request_and_entry<'c: 'b, 'b, 'p: 'b>(
        &'c self,
        method: &str,
        path: &'p str,
        buffer: &'b mut DecodeBuffer,
    ) -> (Request<'b>, Option<&'c Entry>) {
        let method = Method::from_request(method);
        let read_only = method.is_some_and(Method::is_read_only);
        let mut request = Request {
            operation: Operation::NotCovered,
            read_only,
            surface: Surface::Api,
            on_own_token: false,
            client_ip: None,
        };
        let path = without_query(path);
        // Whatever the method or the endpoint: the path's meaning depends on who reads it.
        if ambiguous_path(path) {
            request.operation = Operation::AmbiguousPath;
            return (request, None);
        }
        let Some(found) = method.and_then(|method| self.find_method(method, path)) else { return (request, None) };
        let entry = found.entry;
        request.on_own_token = entry.own_token;
        request.operation = match &entry.needs {
            Needs::Always => Operation::Always,
            Needs::Permissions(permissions) => {
                match boundary_ref(entry.boundary, &found.params, buffer) {
                    Some(boundary) => Operation::Covered { permissions, boundary },
                    // A parameter that does not decode names nothing: not found.
                    None => Operation::Covered { permissions, boundary: BoundaryRef::Project(Locator::Path("")) },
                }
            }
        };
        (request, Some(entry))
    }
}

fn without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// Whether a request path (without its query) has a segment whose meaning depends on who
/// reads it: a dot segment (`.` or `..`, each dot plain or as `%2e` / `%2E`, so `.%2e` too),
/// also between encoded slashes (`a%2F..%2Fb`: a proxy that decodes before it normalises
/// resolves it), or an empty segment between two slashes (`a//b`, which proxies may merge).
///
/// Such a path is refused to every token, not judged by one of its readings: nginx hands
/// `auth_request` the raw URI but may forward the normalised one, so `…/artifacts/../../1/variables`
/// would be judged as a job artifact of the first project and served as another project's
/// CI/CD variables. A single trailing slash (`/projects/17/`) is not ambiguous (it matches no
/// template). One pass over the bytes, no allocation.
pub fn ambiguous_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Nearly every path has no dot, plain or escaped: then only two slashes in a row make it
    // ambiguous. One pass without an early exit (so the compiler vectorises it) decides that,
    // where the walk below takes some ten instructions a byte (about 800 on a forward-auth
    // request, measured under callgrind).
    let next = bytes.get(1..).unwrap_or_default();
    let after_next = bytes.get(2..).unwrap_or_default();
    let (mut dot, mut escaped_dot, mut empty) = (bytes.last() == Some(&b'.'), false, false);
    for (&byte, &following) in bytes.iter().zip(next) {
        dot |= byte == b'.';
        empty |= (byte == b'/') & (following == b'/');
    }
    for ((&byte, &two), &letter) in bytes.iter().zip(next).zip(after_next) {
        escaped_dot |= (byte == b'%') & (two == b'2') & ((letter | 0x20) == b'e');
    }
    if !dot && !escaped_dot {
        return empty;
    }
    let is_dot_segment = |dots: u32, other: bool| !other && (dots == 1 || dots == 2);
    // `%2<x>` at `index`, case-insensitive in `x` (`%2e`, `%2E`; `%2f`, `%2F`).
    let escaped = |index: usize, lower: u8| {
        bytes.get(index) == Some(&b'%')
            && bytes.get(index + 1) == Some(&b'2')
            && bytes.get(index + 2).is_some_and(|byte| (byte | 0x20) == lower)
    };
    // The current segment: how many dots, and whether it holds anything else.
    let (mut dots, mut other) = (0_u32, false);
    let mut after_slash = false;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'/' || escaped(index, b'f') {
            if (byte == b'/' && after_slash) || is_dot_segment(dots, other) {
                return true;
            }
            (dots, other, after_slash) = (0, false, byte == b'/');
            index += if byte == b'/' { 1 } else { 3 };
            continue;
        }
        after_slash = false;
        if byte == b'.' {
            dots += 1;
            index += 1;
        } else if escaped(index, b'e') {
            dots += 1;
            index += 3;
        } else {
            other = true;
            index += 1;
        }
    }
    is_dot_segment(dots, other)
}

fn boundary_ref<'b>(
    source: BoundarySource,
    params: &Params<'b>,
    buffer: &'b mut DecodeBuffer,
) -> Option<BoundaryRef<'b>> {
    let value = |index: u8| params.get(usize::from(index));
    Some(match source {
        BoundarySource::Project(index) => BoundaryRef::Project(locator(value(index)?, buffer)?),
        BoundarySource::Group(index) => BoundaryRef::Group(locator(value(index)?, buffer)?),
        BoundarySource::User(index) => {
            let raw = value(index)?;
            match locator(raw, buffer)? {
                Locator::Id(id) => BoundaryRef::User(UserLocator::Id(id)),
                Locator::Path(name) => BoundaryRef::User(UserLocator::Username(name)),
            }
        }
        BoundarySource::SelfUser => BoundaryRef::User(UserLocator::Caller),
        BoundarySource::Instance => BoundaryRef::Instance,
    })
}

/// A numeric id, or a full path percent-decoded into `buffer` when it needs decoding.
fn locator<'b>(raw: &'b str, buffer: &'b mut DecodeBuffer) -> Option<Locator<'b>> {
    if !raw.is_empty() && raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().ok().map(Locator::Id);
    }
    if !raw.contains('%') {
        return Some(Locator::Path(raw));
    }
    let bytes = raw.as_bytes();
    let mut length = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = if bytes[index] == b'%' {
            let high = hex(*bytes.get(index + 1)?)?;
            let low = hex(*bytes.get(index + 2)?)?;
            index += 3;
            high << 4 | low
        } else {
            index += 1;
            bytes[index - 1]
        };
        *buffer.0.get_mut(length)? = byte;
        length += 1;
    }
    std::str::from_utf8(&buffer.0[..length]).ok().map(Locator::Path)
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Action;

    const SAMPLE: &str = "\
# sample
GET    /version                                          always               instance
GET    /personal_access_tokens/self                      always               user(self)   own_token
GET    /personal_access_tokens/:id                       personal_access_token:read  user(self)
POST   /personal_access_tokens/self/rotate               personal_access_token:update user(self) own_token
GET    /projects/:id/merge_requests/:merge_request_iid   merge_request:read   project(:id)
PUT    /projects/:id/merge_requests/:merge_request_iid   merge_request:update project(:id)
GET    /projects/:id/repository/files/:file_path/raw     repository:read      project(:id)
GET    /projects/:id/repository/archive.:format          repository:read      project(:id)
GET    /projects/:id/repository/archive                  repository:read      project(:id)
GET    /projects/:id/deployments/:deployment_id/merge_requests deployment:read,merge_request:read project(:id)
GET    /groups/:id/members                               member:read          group(:id)
GET    /projects/:id/jobs/:job_id/artifacts/*artifact_path job_artifact:read  project(:id)
GET    /users/:user_id/keys                              ssh_key:read         user(:user_id)
";

    fn catalog() -> (Resources, Catalog) {
        let resources = Resources::builtin().unwrap();
        let catalog = Catalog::parse(&resources, [("sample.txt", SAMPLE)]).unwrap();
        (resources, catalog)
    }

    #[test]
    fn a_permission_list_reads_back_what_it_was_given_in_place_or_spilled() {
        let resources = Resources::builtin().unwrap();
        let all: Vec<Permission> =
            ["issue:read", "issue:create", "issue:update", "issue:delete", "merge_request:read", "note:read"]
                .iter()
                .map(|name| resources.permission(name).unwrap())
                .collect();
        for len in 0..=all.len() {
            let list = PermissionList::new(&all[..len]);
            assert_eq!(&*list, &all[..len], "{len} permissions");
            assert_eq!(matches!(list.0, Held::Here { .. }), (1..=PermissionList::HERE).contains(&len), "{len}");
            assert_eq!(format!("{list:?}"), format!("{:?}", &all[..len]));
            // Equal by content: the unread tail of a shorter list does not count.
            assert_eq!(list, PermissionList::new(&all[..len]));
        }
        assert_ne!(PermissionList::new(&all[..1]), PermissionList::new(&all[..2]));
        assert_ne!(PermissionList::new(&all[1..2]), PermissionList::new(&all[..1]));
    }

    #[test]
    fn matches_with_precedence_encoding_and_methods() {
        let (resources, catalog) = catalog();
        let template = |method: &str, path: &str| catalog.find(method, path).map(|m| m.entry.template.to_string());
        assert_eq!(
            template("GET", "/api/v4/personal_access_tokens/self").as_deref(),
            Some("/personal_access_tokens/self")
        );
        assert_eq!(
            template("GET", "/api/v4/personal_access_tokens/42").as_deref(),
            Some("/personal_access_tokens/:id")
        );
        assert_eq!(template("HEAD", "/api/v4/version?x=1").as_deref(), Some("/version"));
        assert_eq!(template("POST", "/api/v4/version"), None);
        assert_eq!(template("GET", "/version"), None);
        assert_eq!(template("GET", "/api/v4/version/"), None);
        assert_eq!(template("get", "/api/v4/version"), None);
        assert_eq!(
            template("GET", "/api/v4/projects/1/repository/archive.zip").as_deref(),
            Some("/projects/:id/repository/archive.:format")
        );
        assert_eq!(
            template("GET", "/api/v4/projects/1/repository/archive").as_deref(),
            Some("/projects/:id/repository/archive")
        );

        let found =
            catalog.find("GET", "/api/v4/projects/acme%2Fapi/repository/files/src%2Fmain.rs/raw?ref=main").unwrap();
        assert_eq!(found.params.get(0), Some("acme%2Fapi"));
        assert_eq!(found.params.get(1), Some("src%2Fmain.rs"));

        let mut buffer = DecodeBuffer::default();
        let request = catalog.request("PUT", "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests/7", &mut buffer);
        let Operation::Covered { permissions, boundary } = request.operation else { panic!("covered expected") };
        assert_eq!(permissions, &[resources.permission("merge_request:update").unwrap()]);
        assert_eq!(boundary, BoundaryRef::Project(Locator::Path("acme/platform/api")));
        assert!(!request.read_only);

        let mut buffer = DecodeBuffer::default();
        let request = catalog.request("GET", "/api/v4/projects/17/deployments/3/merge_requests", &mut buffer);
        let Operation::Covered { permissions, boundary } = request.operation else { panic!("covered expected") };
        assert_eq!(permissions.len(), 2);
        assert!(permissions.iter().all(|p| p.action == Action::Read));
        assert_eq!(boundary, BoundaryRef::Project(Locator::Id(17)));
        assert!(request.read_only);

        let mut buffer = DecodeBuffer::default();
        let request = catalog.request("GET", "/api/v4/users/alice/keys", &mut buffer);
        assert!(matches!(
            request.operation,
            Operation::Covered { boundary: BoundaryRef::User(UserLocator::Username("alice")), .. }
        ));
        let mut buffer = DecodeBuffer::default();
        let request = catalog.request("POST", "/api/v4/personal_access_tokens/self/rotate", &mut buffer);
        assert!(request.on_own_token);
        let mut buffer = DecodeBuffer::default();
        assert_eq!(catalog.request("DELETE", "/api/v4/nothing/here", &mut buffer).operation, Operation::NotCovered);
        let mut buffer = DecodeBuffer::default();
        // A broken escape names nothing: it resolves to no project.
        let request = catalog.request("GET", "/api/v4/projects/acme%2/merge_requests/1", &mut buffer);
        assert!(matches!(
            request.operation,
            Operation::Covered { boundary: BoundaryRef::Project(Locator::Path("")), .. }
        ));
    }

    #[test]
    fn bad_catalogs_name_file_and_line() {
        let resources = Resources::builtin().unwrap();
        let cases = [
            (
                "GET /a always instance\nGET /a always instance",
                2,
                "duplicate route `GET /a`, already declared at f.txt:1",
            ),
            (
                "GET /p/:id always instance\nGET /p/:pid/x always instance",
                2,
                "names parameter `:pid` where another template has `:id`",
            ),
            ("GET /p/:id issues:read project(:id)", 1, "unknown resource `issues`"),
            ("GET /p/:id issue:write project(:id)", 1, "unknown action `write`"),
            ("GET /p/:id ssh_key:read project(:id)", 1, "does not exist at boundary `project`"),
            ("GET /p/:id job_artifact:create project(:id)", 1, "does not exist at boundary `project`"),
            ("GET /p/:id issue:read project(:project_id)", 1, "`:project_id` is not in the path"),
            ("FETCH /p always instance", 1, "unknown method"),
            ("GET p always instance", 1, "must start with `/`"),
            ("GET /api/v4/p always instance", 1, "must not include"),
            ("GET /p//q always instance", 1, "malformed segment"),
            ("GET /p always", 1, "expected `METHOD PATH PERMISSIONS BOUNDARY [FLAGS]`"),
            ("GET /p always instance shiny", 1, "unknown flag"),
            ("GET /p/*rest/x always instance", 1, "may only end with a catch-all"),
            ("GET /p/:x always galaxy(:x)", 1, "unknown boundary kind"),
        ];
        for (text, line, needle) in cases {
            let error = Catalog::parse(&resources, [("f.txt", text)]).unwrap_err();
            assert_eq!((error.file.as_str(), error.line), ("f.txt", line), "{text}");
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }
}
