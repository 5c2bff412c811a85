//! The console's users: a file of `name:role:password-hash` lines, like htpasswd. Roles are
//! `viewer` (reads) and `operator` (also replays, purges, parks); hashes are argon2id PHC strings
//! (`moka-ingest console hash-password` makes them). Blank lines and `#` comments are skipped.
//! The file is read again when it changes, so a user can be removed without a restart.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Also replays, purges and parks.
    Operator,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    pub fn can_act(self) -> bool {
        self == Role::Operator
    }
}

/// Why a users file was refused. Messages name the file and the line, never a hash.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the users file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("users file {}, line {line}: {problem}", path.display())]
    Line { path: PathBuf, line: usize, problem: String },
    #[error("users file {}: no users", path.display())]
    Empty { path: PathBuf },
}

struct User {
    role: Role,
    hash: String,
}

/// The users of one reading of the file.
pub struct Users {
    by_name: HashMap<String, User>,
}

impl Users {
    /// Reads and checks `path`: every line names a user once, a known role and a valid hash.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| UsersError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Users, UsersError> {
        let mut by_name = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let refuse = |problem: String| UsersError::Line { path: path.to_owned(), line: n + 1, problem };
            let mut parts = line.splitn(3, ':');
            let (name, role, hash) = match (parts.next(), parts.next(), parts.next()) {
                (Some(name), Some(role), Some(hash)) if !name.is_empty() => (name, role, hash),
                _ => return Err(refuse("expected name:role:password-hash".into())),
            };
            let role = Role::parse(role)
                .ok_or_else(|| refuse(format!("role {role:?} is not allowed: use `viewer` or `operator`")))?;
            match PasswordHash::new(hash) {
                Ok(h) if h.algorithm.as_str() == "argon2id" => {}
                _ => {
                    return Err(refuse(
                        "the password hash is not an argon2id PHC string (use `moka-ingest console hash-password`)"
                            .into(),
                    ))
                }
            }
            if by_name.insert(name.to_owned(), User { role, hash: hash.to_owned() }).is_some() {
                return Err(refuse(format!("user {name:?} appears twice")));
            }
        }
        if by_name.is_empty() {
            return Err(UsersError::Empty { path: path.to_owned() });
        }
        Ok(Users { by_name })
    }

    /// The role of `name` if `password` is theirs. Checks an unknown name against a dummy hash, so
    /// that a wrong name costs as long as a wrong password.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let (user, hash) = match self.by_name.get(name) {
            Some(u) => (Some(u), u.hash.as_str()),
            None => (None, dummy_hash()),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        user.filter(|_| ok).map(|u| u.role)
    }

    /// The role of `name`, if they (still) exist.
    pub fn role(&self, name: &str) -> Option<Role> {
        self.by_name.get(name).map(|u| u.role)
    }
}

/// A hash of a random password nobody has, checked for unknown names (made once).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&rand::random::<u128>().to_string()).expect("hashing a fresh password"))
}

/// Hashes `password` for the users file: argon2id with the crate's default (OWASP) parameters and
/// a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// The users file, read again whenever its modification time changes. A file that becomes
/// unreadable or invalid keeps the last good reading (and says so once), so a half-written edit
/// does not lock everyone out; removing a user takes effect with the next good save.
pub struct UsersFile {
    path: PathBuf,
    current: Mutex<(Option<SystemTime>, std::sync::Arc<Users>)>,
}

impl UsersFile {
    /// Reads `path` now: a console does not start without users.
    pub fn open(path: &Path) -> Result<UsersFile, UsersError> {
        let users = Users::load(path)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(UsersFile { path: path.to_owned(), current: Mutex::new((modified, std::sync::Arc::new(users))) })
    }

    /// The users as the file says now.
    pub fn users(&self) -> std::sync::Arc<Users> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut current = self.current.lock().expect("users lock");
        if modified != current.0 {
            match Users::load(&self.path) {
                Ok(users) => *current = (modified, std::sync::Arc::new(users)),
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "users file refused; keeping the previous users");
                    current.0 = modified;
                }
            }
        }
        current.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Users, UsersError> {
        Users::parse(text, Path::new("users.txt"))
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_the_role_comes_with_it() {
        let (op, view) = (hash_password("op secret").unwrap(), hash_password("viewer secret").unwrap());
        assert!(op.starts_with("$argon2id$"), "{op}");
        let users = parse(&format!("# console users\nana:operator:{op}\n\nbo:viewer:{view}\n")).unwrap();
        assert_eq!(users.verify("ana", "op secret"), Some(Role::Operator));
        assert_eq!(users.verify("bo", "viewer secret"), Some(Role::Viewer));
        assert_eq!(users.verify("ana", "viewer secret"), None, "another user's password");
        assert_eq!(users.verify("ana", ""), None);
        assert_eq!(users.verify("nobody", "op secret"), None);
        assert!(Role::Operator.can_act() && !Role::Viewer.can_act());
    }

    #[test]
    fn a_bad_line_is_refused_naming_the_line_and_never_showing_a_hash() {
        let good = hash_password("x").unwrap();
        let cases = [
            (format!("ana:admin:{good}"), "line 1: role \"admin\" is not allowed"),
            ("ana:viewer:plaintext".to_string(), "line 1: the password hash is not an argon2id PHC string"),
            (format!("ana:viewer:{good}\nana:operator:{good}"), "line 2: user \"ana\" appears twice"),
            ("just-a-name".to_string(), "line 1: expected name:role:password-hash"),
            ("# nobody\n".to_string(), "no users"),
        ];
        for (text, want) in cases {
            let err = parse(&text).err().unwrap_or_else(|| panic!("{text:?} accepted")).to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains(&good), "a refusal shows no hash: {err}");
        }
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_a_bad_edit_keeps_the_last_good_users() {
        let dir = std::env::temp_dir().join(format!("moka-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let hash = hash_password("pw").unwrap();
        std::fs::write(&path, format!("ana:operator:{hash}\nbo:viewer:{hash}\n")).unwrap();
        let file = UsersFile::open(&path).unwrap();
        assert_eq!(file.users().role("bo"), Some(Role::Viewer));
        // Removed without a restart (mtime granularity: make sure the time moves).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, format!("ana:operator:{hash}\n")).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(file.users().role("bo"), None, "bo is gone");
        // A broken save keeps the last good users.
        std::fs::write(&path, "ana:operator:").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(file.users().role("ana"), Some(Role::Operator));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
