//! Permissions: what a principal may do, to which topics and groups.
//!
//! A permission is written `ACTION:PATTERN`:
//! - `ACTION` is `publish`, `consume`, `admin`, `dlq`, or `*` for all four;
//! - `PATTERN` is `topic/GLOB` (topics), `group/GLOB` (groups), `GLOB` (both), or `*` alone
//!   (every topic and group, and the server itself: `/metrics` and the health details);
//! - `GLOB` is a name in which `*` stands for any run of characters (`orders.*`, `*-audit`).
//!
//! What each action covers:
//! - `publish` on a topic: publish to it;
//! - `consume` on a topic: read it and subscribe to it; on a group: join it (as a member),
//!   settle its deliveries — a subscription needs both, the group and each of its topics;
//! - `admin` on a topic: create, describe, delete; on a group: describe, reset, skip damage;
//!   on the server: metrics and health details;
//! - `dlq` on a group: list, replay and purge its dead letters.
//!
//! Nothing is allowed that no permission names (default deny). Listings show only what the
//! principal holds some permission on.

use std::fmt;
use std::sync::Arc;

use herald_model::Code;
use herald_model::dead_letter::dead_letter_group;

/// What a permission allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Publish to a topic.
    Publish,
    /// Read and subscribe to a topic; join and settle in a group.
    Consume,
    /// Create, describe and delete topics; describe, reset groups; the server's metrics.
    Admin,
    /// A group's dead letters: list, replay, purge.
    Dlq,
}

impl Action {
    /// Every action, in the order the docs list them.
    pub const ALL: [Action; 4] = [Action::Publish, Action::Consume, Action::Admin, Action::Dlq];

    /// Its name in a permission.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Consume => "consume",
            Action::Admin => "admin",
            Action::Dlq => "dlq",
        }
    }

    /// What the action does, for a refusal's message.
    const fn verb(self) -> &'static str {
        match self {
            Action::Publish => "publish to",
            Action::Consume => "consume",
            Action::Admin => "administer",
            Action::Dlq => "handle the dead letters of",
        }
    }
}

/// What an action is done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A topic, by name.
    Topic(&'a str),
    /// A consumer group, by name.
    Group(&'a str),
    /// The server itself (metrics, health details).
    Server,
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(t) => write!(f, "topic {t:?}"),
            Resource::Group(g) => write!(f, "group {g:?}"),
            Resource::Server => f.write_str("the server"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Topics,
    Groups,
    Both,
    /// `*` alone: every topic and group and the server.
    Everything,
}

/// One parsed permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// `None` = every action.
    action: Option<Action>,
    scope: Scope,
    glob: String,
    text: String,
}

/// Longest permission accepted, in bytes.
const PERMISSION_BYTES_MAX: usize = 512;

impl Permission {
    /// Parses `ACTION:PATTERN` (see the module docs).
    pub fn parse(text: &str) -> Result<Permission, String> {
        let usage = "write ACTION:PATTERN, e.g. publish:orders.*, consume:group/billing or admin:* (actions: publish, \
                     consume, admin, dlq, *)";
        if text.len() > PERMISSION_BYTES_MAX {
            return Err(format!("a permission is at most {PERMISSION_BYTES_MAX} bytes; {usage}"));
        }
        let (action, pattern) = text.split_once(':').ok_or_else(|| format!("{text:?} has no ':'; {usage}"))?;
        let action = match action {
            "*" => None,
            a => Some(
                Action::ALL
                    .into_iter()
                    .find(|x| x.as_str() == a)
                    .ok_or_else(|| format!("{text:?}: unknown action {a:?}; {usage}"))?,
            ),
        };
        let (scope, glob) = match pattern {
            "*" => (Scope::Everything, "*"),
            p => match p.split_once('/') {
                Some(("topic", g)) => (Scope::Topics, g),
                Some(("group", g)) => (Scope::Groups, g),
                Some((kind, _)) => return Err(format!("{text:?}: unknown kind {kind:?} (topic/ or group/); {usage}")),
                None => (Scope::Both, p),
            },
        };
        let name_chars = |c: u8| c.is_ascii_alphanumeric() || b"._-*".contains(&c);
        if glob.is_empty() || !glob.bytes().all(name_chars) {
            return Err(format!(
                "{text:?}: the pattern {glob:?} must be a name (letters, digits, '.', '_', '-') in which '*' stands for \
                 any characters; {usage}"
            ));
        }
        Ok(Permission { action, scope, glob: glob.to_owned(), text: text.to_owned() })
    }

    /// Whether it allows `action` on some topic (what a "create topic" control asks: the name
    /// is not typed yet).
    fn allows_on_some_topic(&self, action: Action) -> bool {
        self.covers_action(action) && matches!(self.scope, Scope::Topics | Scope::Both | Scope::Everything)
    }

    fn covers_action(&self, action: Action) -> bool {
        self.action.is_none_or(|a| a == action)
    }

    fn covers(&self, resource: Resource<'_>) -> bool {
        match (self.scope, resource) {
            (Scope::Everything, _) => true,
            (_, Resource::Server) => false,
            (Scope::Topics | Scope::Both, Resource::Topic(name))
            | (Scope::Groups | Scope::Both, Resource::Group(name)) => glob_matches(&self.glob, name),
            _ => false,
        }
    }

    /// Whether it allows `action` on `resource`.
    pub fn allows(&self, action: Action, resource: Resource<'_>) -> bool {
        self.covers_action(action) && self.covers(resource)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `name` matches `glob`, in which `*` stands for any run of characters.
fn glob_matches(glob: &str, name: &str) -> bool {
    let (g, n) = (glob.as_bytes(), name.as_bytes());
    // Greedy with backtracking to the last star: linear in practice, never exponential.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ni));
            gi += 1;
        } else if gi < g.len() && g[gi] == n[ni] {
            gi += 1;
            ni += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

/// Who is calling, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name, or `anonymous`.
    pub name: Arc<str>,
    /// No credentials: a server without authentication (everything allowed).
    pub anonymous: bool,
    permissions: Arc<[Permission]>,
    /// When its token expires (ms since the Unix epoch).
    pub expires_ms: Option<u64>,
    /// Its token's quotas.
    pub quotas: super::quotas::Quotas,
    /// Its token's id (`None`: anonymous).
    pub token_id: Option<Arc<str>>,
}

/// A refusal: its code and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// `unauthenticated`, `permission_denied` or `quota_exceeded`.
    pub code: Code,
    /// What was refused and what to do.
    pub message: String,
    /// For `quota_exceeded`: when to retry.
    pub retry_after_s: Option<u64>,
}

impl Denied {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Denied {
        Denied { code, message: message.into(), retry_after_s: None }
    }
}

impl Principal {
    /// The principal of a server without authentication: may do everything.
    pub fn anonymous() -> Principal {
        // Made once: every request of a server without authentication is this caller.
        static ANONYMOUS: std::sync::OnceLock<Principal> = std::sync::OnceLock::new();
        ANONYMOUS
            .get_or_init(|| Principal {
                name: "anonymous".into(),
                anonymous: true,
                permissions: vec![Permission::parse("*:*").expect("a valid permission")].into(),
                expires_ms: None,
                quotas: super::quotas::Quotas::default(),
                token_id: None,
            })
            .clone()
    }

    /// A named principal with these permissions.
    pub fn new(name: &str, permissions: Vec<Permission>, expires_ms: Option<u64>) -> Principal {
        Principal {
            name: name.into(),
            anonymous: false,
            permissions: permissions.into(),
            expires_ms,
            quotas: super::quotas::Quotas::default(),
            token_id: None,
        }
    }

    /// Its permissions.
    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }

    /// Whether it may do `action` to `resource`.
    pub fn allows(&self, action: Action, resource: Resource<'_>) -> bool {
        self.permissions.iter().any(|p| p.allows(action, resource))
    }

    /// The actions it may do to `resource`, by name (what the Console shows controls for).
    pub fn actions_on(&self, resource: Resource<'_>) -> Vec<&'static str> {
        Action::ALL.into_iter().filter(|&a| self.check(a, resource).is_ok()).map(Action::as_str).collect()
    }

    /// Whether some topic name exists that it may create (an admin permission on topics).
    pub fn may_create_topics(&self) -> bool {
        self.permissions.iter().any(|p| p.allows_on_some_topic(Action::Admin))
    }

    /// `Ok` when it may do `action` to `resource`; otherwise `permission_denied`, worded the same
    /// whether or not the topic or group exists.
    pub fn check(&self, action: Action, resource: Resource<'_>) -> Result<(), Denied> {
        if let Resource::Topic(t) = resource {
            // The audit trail is the server's own record: nobody writes into it or deletes it,
            // not even `*:*`.
            if t == crate::audit::AUDIT_TOPIC && matches!(action, Action::Publish | Action::Admin) {
                return Err(Denied::new(
                    Code::PermissionDenied,
                    format!("nobody may {} {resource}: the server alone keeps the audit trail", action.verb()),
                ));
            }
            // A group's dead letters and replays are its `dlq` business, whatever the topic
            // permissions say; only the server writes into them.
            if let Some(group) = dead_letter_group(t) {
                if action == Action::Publish {
                    return Err(Denied::new(
                        Code::PermissionDenied,
                        format!("nobody may publish to {resource}: the server alone writes a group's dead letters"),
                    ));
                }
                return self.check(Action::Dlq, Resource::Group(group));
            }
        }
        if self.allows(action, resource) {
            return Ok(());
        }
        let needed = match resource {
            Resource::Topic(t) => format!("{}:topic/{t}", action.as_str()),
            Resource::Group(g) => format!("{}:group/{g}", action.as_str()),
            Resource::Server => format!("{}:*", action.as_str()),
        };
        Err(Denied::new(
            Code::PermissionDenied,
            format!(
                "{:?} may not {} {resource}; a token with the permission {needed} (or a pattern covering it) may",
                self.name,
                action.verb()
            ),
        ))
    }

    /// `Ok` when some permission covers `resource` (what describing a topic or group asks).
    pub fn check_any(&self, resource: Resource<'_>) -> Result<(), Denied> {
        if self.sees(resource) {
            return Ok(());
        }
        Err(Denied::new(
            Code::PermissionDenied,
            format!(
                "{:?} may not see {resource}; any permission on it (publish, consume, admin or dlq) allows describing it",
                self.name
            ),
        ))
    }

    /// Whether a listing shows it this topic: some permission covers it.
    pub fn sees(&self, resource: Resource<'_>) -> bool {
        if let Resource::Topic(t) = resource
            && let Some(group) = dead_letter_group(t)
        {
            return self.allows(Action::Dlq, Resource::Group(group));
        }
        Action::ALL.into_iter().any(|a| self.allows(a, resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn globs_match_names() {
        for (glob, name, expected) in [
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders", false),
            ("*-audit", "billing-audit", true),
            ("*-audit", "billing-audit-x", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
            ("**", "anything", true),
        ] {
            assert_eq!(glob_matches(glob, name), expected, "{glob} ~ {name}");
        }
    }

    #[test]
    fn permissions_cover_their_action_kind_and_pattern() {
        let publish_orders = p("publish:orders.*");
        assert!(publish_orders.allows(Action::Publish, Resource::Topic("orders.eu")));
        assert!(publish_orders.allows(Action::Publish, Resource::Group("orders.eu")));
        assert!(!publish_orders.allows(Action::Consume, Resource::Topic("orders.eu")));
        assert!(!publish_orders.allows(Action::Publish, Resource::Topic("payments")));
        assert!(!publish_orders.allows(Action::Publish, Resource::Server));
        let group_only = p("consume:group/billing");
        assert!(group_only.allows(Action::Consume, Resource::Group("billing")));
        assert!(!group_only.allows(Action::Consume, Resource::Topic("billing")));
        let topic_only = p("*:topic/orders");
        for a in Action::ALL {
            assert!(topic_only.allows(a, Resource::Topic("orders")));
            assert!(!topic_only.allows(a, Resource::Group("orders")));
        }
        let admin_all = p("admin:*");
        assert!(admin_all.allows(Action::Admin, Resource::Server));
        assert!(!admin_all.allows(Action::Publish, Resource::Topic("x")));
        assert!(!p("admin:x*").allows(Action::Admin, Resource::Server), "only '*' alone covers the server");
    }

    #[test]
    fn bad_permissions_say_what_is_wrong() {
        for (text, says) in [
            ("publish", "no ':'"),
            ("write:orders", "unknown action"),
            ("publish:queue/orders", "unknown kind"),
            ("publish:", "must be a name"),
            ("publish:or ders", "must be a name"),
            ("publish:topic/", "must be a name"),
        ] {
            let e = Permission::parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(Permission::parse(&format!("publish:{}", "a".repeat(600))).is_err());
    }

    #[test]
    fn a_refusal_names_what_would_allow_it_and_listings_follow_permissions() {
        let billing = Principal::new("billing", vec![p("consume:orders"), p("consume:group/billing")], None);
        assert!(billing.check(Action::Consume, Resource::Topic("orders")).is_ok());
        let e = billing.check(Action::Publish, Resource::Topic("orders")).unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
        assert!(e.message.contains("publish:topic/orders"), "{}", e.message);
        assert!(billing.sees(Resource::Topic("orders")));
        assert!(!billing.sees(Resource::Topic("payments")));
        assert!(billing.sees(Resource::Group("billing")));
        assert!(!billing.sees(Resource::Server));
        let anyone = Principal::anonymous();
        assert!(anyone.allows(Action::Dlq, Resource::Group("g")) && anyone.allows(Action::Admin, Resource::Server));
        let e = anyone.check(Action::Publish, Resource::Topic("herald.audit")).unwrap_err();
        assert!(e.message.contains("server alone"), "{}", e.message);
        assert!(anyone.check(Action::Consume, Resource::Topic("herald.audit")).is_ok());
        assert!(anyone.check(Action::Admin, Resource::Topic("herald.audit")).is_err());
        // Dead letters are the group's `dlq` business, not the topic permissions'.
        let topics = Principal::new("t", vec![p("*:topic/*")], None);
        for (a, t) in
            [(Action::Consume, "orders.dlq"), (Action::Admin, "orders.dlq"), (Action::Consume, "orders.replay")]
        {
            assert!(topics.check(a, Resource::Topic(t)).is_err(), "{t}");
        }
        assert!(!topics.sees(Resource::Topic("orders.dlq")));
        let dlq = Principal::new("d", vec![p("dlq:group/orders")], None);
        assert!(dlq.check(Action::Consume, Resource::Topic("orders.dlq")).is_ok());
        assert!(dlq.sees(Resource::Topic("orders.dlq")) && !dlq.sees(Resource::Topic("payments.dlq")));
        assert!(dlq.check(Action::Publish, Resource::Topic("orders.replay")).is_err());
    }
}
