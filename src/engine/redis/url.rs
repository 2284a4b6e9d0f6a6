//! Where Redis is: `RedisUrl` parsed from `--redis`, the address a link
//! connects to (`Addr`, resolved again on every connect: a managed Redis
//! moves its primary behind one name), and the commands every new
//! connection sends first (`setup`: AUTH and SELECT).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Where Redis is: `redis[s]://[user:pass@]host:port[/db]`,
/// `redis[s]-sentinel://[user:pass@]host[:port][,host[:port]…][/db]#MASTER`
/// or `unix:///path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub target: Target,
    /// (user, password) of the data nodes; `redis://:pass@` has no user.
    pub auth: Option<(Option<String>, String)>,
    pub db: u32,
    /// `rediss://`, `rediss-sentinel://`: TLS, verified against the
    /// system's roots plus these (`--redis-cacert`).
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Host(Host),
    Unix(PathBuf),
    /// Sentinels to ask where the master named `master` is.
    Sentinel {
        sentinels: Vec<Host>,
        master: String,
        password: Option<String>,
    },
}

/// A host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub port: u16,
}

impl Host {
    fn parse(s: &str, default_port: u16) -> Result<Host, String> {
        let (name, port) = match s.rsplit_once(':').filter(|(h, _)| !h.is_empty() && !h.ends_with(':')) {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port in {s}"))?),
            None => (s, default_port),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            return Err("a host is missing".into());
        }
        Ok(Host { name: name.to_string(), port })
    }

    /// Resolved now, blocking (`resolve.rs` runs it off the reactor).
    pub fn resolve(&self) -> io::Result<Addr> {
        let addr = (self.name.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", self.name)))?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} resolves to no address", self.name)))?;
        Ok(Addr::Tcp(addr, self.name.clone()))
    }
}

/// The socket address of a Redis server (with the name its certificate is checked against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr, String),
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
            return Ok(RedisUrl { target: Target::Unix(path.into()), auth: pass.map(|p| (user, p)), db, tls: None });
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(EXPECTED.into());
        };
        let (tls, sentinel) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis-sentinel" => (false, true),
            "rediss-sentinel" => (true, true),
            _ => return Err(EXPECTED.into()),
        };
        if tls && !cfg!(feature = "tls") {
            return Err(format!("{scheme}:// needs TLS, and this ssehub was built without it (cargo feature `tls`)"));
        }
        let (rest, master) = match rest.split_once('#') {
            Some((rest, m)) if sentinel && !m.is_empty() => (rest, Some(crate::http::percent_decode(m))),
            _ if sentinel => return Err("a Sentinel URL ends with #MASTER, the name the Sentinels know the master by".into()),
            _ => (rest, None),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut sentinel_password = None;
        for (k, v) in crate::http::query_pairs(query) {
            match k.as_str() {
                "sentinel_password" if sentinel => sentinel_password = Some(v),
                _ => return Err(format!("unknown parameter {k}{}", if sentinel { " (sentinel_password)" } else { "" })),
            }
        }
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((creds, rest)) => {
                let (user, pass) = creds.split_once(':').unwrap_or(("", creds));
                let user = crate::http::percent_decode(user);
                (Some(((!user.is_empty()).then_some(user), crate::http::percent_decode(pass))), rest)
            }
            None => (None, rest),
        };
        let (hosts, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, db)) => (h, db.parse().map_err(|_| "the path must be a db number")?),
            None => (rest, 0),
        };
        let target = match master {
            Some(master) => {
                let sentinels = hosts.split(',').map(|h| Host::parse(h, 26379)).collect::<Result<Vec<_>, _>>()?;
                Target::Sentinel { sentinels, master, password: sentinel_password }
            }
            None => Target::Host(Host::parse(hosts, 6379)?),
        };
        Ok(RedisUrl { target, auth, db, tls: tls.then(Tls::default) })
    }

    pub fn describe(&self) -> String {
        let s = if self.tls.is_some() { "s" } else { "" };
        match &self.target {
            Target::Host(h) => format!("redis{s}://{}:{}/{}", h.name, h.port, self.db),
            Target::Unix(p) => format!("unix://{}", p.display()),
            Target::Sentinel { sentinels, master, .. } => {
                let hosts: Vec<String> = sentinels.iter().map(|h| format!("{}:{}", h.name, h.port)).collect();
                format!("redis{s}-sentinel://{}/{}#{master}", hosts.join(","), self.db)
            }
        }
    }
}

const EXPECTED: &str = "expected redis://host:port, rediss://host:port, redis-sentinel://host:port,…#MASTER or unix:///path";

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, port: u16) -> Host {
        Host { name: name.into(), port }
    }

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(u, RedisUrl { target: Target::Host(host("127.0.0.1", 6380)), auth: None, db: 2, tls: None });
        let u = RedisUrl::parse("redis://ann:p%40ss@127.0.0.1").unwrap();
        assert_eq!(u.auth, Some((Some("ann".into()), "p@ss".into())));
        assert_eq!(u.target, Target::Host(host("127.0.0.1", 6379)));
        assert_eq!(RedisUrl::parse("redis://:secret@127.0.0.1:1/").unwrap().auth, Some((None, "secret".into())));
        assert_eq!(RedisUrl::parse("unix:///run/redis.sock").unwrap().target, Target::Unix("/run/redis.sock".into()));
        let u = RedisUrl::parse("unix:///run/r.sock?db=2&password=p%26w").unwrap();
        assert_eq!((u.db, u.auth), (2, Some((None, "p&w".to_string()))));
        for bad in ["http://x", "redis://127.0.0.1:1/x", "unix://rel", "redis-sentinel://h:1", "redis://h:x", "redis://h?x=1"] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_and_sentinel_urls() {
        let u = RedisUrl::parse("rediss://cache.example.com:6380").unwrap();
        assert_eq!((u.target, u.tls), (Target::Host(host("cache.example.com", 6380)), Some(Tls::default())));
        let u = RedisUrl::parse("redis-sentinel://:pw@10.0.0.1,10.0.0.2:26380/3?sentinel_password=s%21#my%20master").unwrap();
        let sentinels = vec![host("10.0.0.1", 26379), host("10.0.0.2", 26380)];
        assert_eq!(u.target, Target::Sentinel { sentinels, master: "my master".into(), password: Some("s!".into()) });
        assert_eq!((u.db, u.auth, u.tls), (3, Some((None, "pw".into())), None));
        assert_eq!(RedisUrl::parse("rediss-sentinel://a#m").unwrap().tls, Some(Tls::default()));
        assert_eq!(RedisUrl::parse("redis-sentinel://a:1,b:2#m").unwrap().describe(), "redis-sentinel://a:1,b:2/0#m");
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
