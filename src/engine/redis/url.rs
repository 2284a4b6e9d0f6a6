//! Where Redis is: `RedisUrl` parsed from `--redis`, the address a link
//! connects to (`Addr`), and the commands every new connection sends first
//! (`setup`: AUTH and SELECT).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Where Redis is: `redis://[user:pass@]host:port[/db]` or `unix:///path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: Addr,
    /// (user, password); `redis://:pass@` has no user.
    pub auth: Option<(Option<String>, String)>,
    pub db: u32,
}

/// The socket address of a Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl RedisUrl {
    /// AUTH and SELECT, as the URL asks: the first commands of every connection.
    pub fn setup(&self) -> Vec<Vec<Vec<u8>>> {
        let mut commands = Vec::new();
        if let Some((user, pass)) = &self.auth {
            let mut auth = vec![b"AUTH".to_vec()];
            auth.extend(user.as_ref().map(|u| u.as_bytes().to_vec()));
            auth.push(pass.as_bytes().to_vec());
            commands.push(auth);
        }
        if self.db != 0 {
            commands.push(vec![b"SELECT".to_vec(), self.db.to_string().into_bytes()]);
        }
        commands
    }

    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        if let Some(rest) = s.strip_prefix("unix://") {
            // unix:///path[?db=N][&user=U][&password=P]
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !path.starts_with('/') {
                return Err("expected unix:///absolute/path".into());
            }
            let (mut db, mut user, mut pass) = (0, None, None);
            for (k, v) in crate::http::query_pairs(query) {
                match k.as_str() {
                    "db" => db = v.parse().map_err(|_| "db must be a number")?,
                    "user" => user = Some(v),
                    "password" => pass = Some(v),
                    _ => return Err(format!("unknown parameter {k} (db, user, password)")),
                }
            }
            return Ok(RedisUrl { addr: Addr::Unix(path.into()), auth: pass.map(|p| (user, p)), db });
        }
        let rest = s.strip_prefix("redis://").ok_or("expected redis://host:port or unix:///path (rediss:// TLS is not supported)")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((creds, rest)) => {
                let (user, pass) = creds.split_once(':').unwrap_or(("", creds));
                let user = crate::http::percent_decode(user);
                (Some(((!user.is_empty()).then_some(user), crate::http::percent_decode(pass))), rest)
            }
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, db)) => (h, db.parse().map_err(|_| "the path must be a db number")?),
            None => (rest, 0),
        };
        let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:6379") };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hostport} resolves to no address"))?;
        Ok(RedisUrl { addr: Addr::Tcp(addr), auth, db })
    }

    pub fn describe(&self) -> String {
        match &self.addr {
            Addr::Tcp(a) => format!("redis://{a}/{}", self.db),
            Addr::Unix(p) => format!("unix://{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(u, RedisUrl { addr: Addr::Tcp("127.0.0.1:6380".parse().unwrap()), auth: None, db: 2 });
        let u = RedisUrl::parse("redis://ann:p%40ss@127.0.0.1").unwrap();
        assert_eq!(u.auth, Some((Some("ann".into()), "p@ss".into())));
        assert_eq!(u.addr, Addr::Tcp("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(RedisUrl::parse("redis://:secret@127.0.0.1:1/").unwrap().auth, Some((None, "secret".into())));
        assert_eq!(RedisUrl::parse("unix:///run/redis.sock").unwrap().addr, Addr::Unix("/run/redis.sock".into()));
        let u = RedisUrl::parse("unix:///run/r.sock?db=2&password=p%26w").unwrap();
        assert_eq!((u.db, u.auth), (2, Some((None, "p&w".to_string()))));
        for bad in ["rediss://h:1", "http://x", "redis://127.0.0.1:1/x", "unix://rel"] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn setup_sends_auth_then_select() {
        let setup = |url: &str| RedisUrl::parse(url).unwrap().setup();
        let words = |c: &[&str]| c.iter().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(setup("redis://ann:pw@127.0.0.1:1/3"), [words(&["AUTH", "ann", "pw"]), words(&["SELECT", "3"])]);
        assert_eq!(setup("redis://:pw@127.0.0.1:1"), [words(&["AUTH", "pw"])]);
        assert_eq!(setup("unix:///run/r.sock?db=0&user=u&password=p"), [words(&["AUTH", "u", "p"])]);
        assert_eq!(setup("redis://127.0.0.1:1/0"), Vec::<Vec<Vec<u8>>>::new());
    }
}
