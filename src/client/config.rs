//! Where the server URL and API key come from. First found wins:
//! `--url`/`--api-key`; the `-p` profile's section of the config file;
//! `SSEHUB_URL`/`SSEHUB_API_KEY`; the keys at the top of the config file;
//! the default URL. An explicit `-p` beats the environment because it was
//! typed for this one command.

use super::args::Globals;
use super::error::Error;
use super::url::BaseUrl;
use std::path::{Path, PathBuf};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug)]
pub struct Settings {
    pub url: BaseUrl,
    pub api_key: String,
}

/// Reads the environment and the config file, then resolves.
pub fn load(globals: &Globals) -> Result<Settings, Error> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let path = file_path(&env);
    let text = match &path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Usage(format!("cannot read {}: {e}", path.display()))),
        },
        None => None,
    };
    let settings = resolve(globals, &env, path.as_deref(), text.as_deref())?;
    if settings.url.tls.as_ref().is_some_and(|t| t.insecure) {
        eprintln!("ssehub: warning: --insecure: the certificate of {} is not verified", settings.url);
    }
    Ok(settings)
}

/// `$XDG_CONFIG_HOME/ssehub/config`, else `$HOME/.config/ssehub/config`.
pub fn file_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("ssehub").join("config"))
}

/// `path` is where the config file is looked for; `text` is its content
/// if it exists.
pub fn resolve(
    globals: &Globals,
    env: &dyn Fn(&str) -> Option<String>,
    path: Option<&Path>,
    text: Option<&str>,
) -> Result<Settings, Error> {
    let location = path.map_or_else(|| "the config file".to_string(), |p| p.display().to_string());
    let ini = match text {
        Some(text) => Ini::parse(text).map_err(|e| Error::Usage(format!("{location}: {e}")))?,
        None => Ini::default(),
    };
    if let Some(profile) = &globals.profile
        && !ini.has_section(profile)
    {
        let message = match text {
            Some(_) => format!("profile {profile:?} not found in {location}"),
            None => format!("profile {profile:?} not found: there is no {location}"),
        };
        return Err(Error::Usage(message));
    }
    let pick = |flag: &Option<String>, key: &str, var: &str| {
        let profile = globals.profile.as_deref().and_then(|p| ini.get(p, key));
        flag.clone().or(profile).or_else(|| env(var)).or_else(|| ini.get("", key))
    };
    let url = pick(&globals.url, "url", "SSEHUB_URL").unwrap_or_else(|| DEFAULT_URL.to_string());
    let mut url = BaseUrl::parse(&url).map_err(Error::Usage)?;
    if let Some(tls) = &mut url.tls {
        tls.cacert = pick(&globals.cacert, "cacert", "SSEHUB_CACERT").map(PathBuf::from);
        tls.cacert_flag = "--cacert";
        tls.insecure = globals.insecure || env("SSEHUB_INSECURE").is_some_and(|v| v == "1" || v == "true");
    }
    let api_key = pick(&globals.api_key, "api_key", "SSEHUB_API_KEY").ok_or_else(|| {
        let message = format!("no API key: pass --api-key, set SSEHUB_API_KEY, or put api_key in {location}");
        Error::Usage(message)
    })?;
    // It goes into a header line, so it cannot hold a line break.
    if api_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Usage("the API key contains spaces or control characters".to_string()));
    }
    Ok(Settings { url, api_key })
}

/// The config file: `key = value` lines, `[profile]` sections, `#` and `;`
/// comments. Keys before the first section are the defaults.
#[derive(Debug, Default)]
struct Ini {
    /// (section, key, value); the top has section "".
    entries: Vec<(String, String, String)>,
    sections: Vec<String>,
}

impl Ini {
    fn parse(text: &str) -> Result<Ini, String> {
        let mut ini = Ini::default();
        let mut section = String::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let name = name.strip_suffix(']').ok_or_else(|| format!("line {}: unclosed [section]", number + 1))?;
                section = name.trim().to_string();
                ini.sections.push(section.clone());
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| format!("line {}: expected key = value", number + 1))?;
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            ini.entries.push((section.clone(), key.trim().to_string(), value.to_string()));
        }
        Ok(ini)
    }

    fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }

    /// The last value wins, as when a file is edited by appending.
    fn get(&self, section: &str, key: &str) -> Option<String> {
        let found = self.entries.iter().rev().find(|(s, k, _)| s == section && k == key);
        found.map(|(_, _, v)| v.clone()).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# ssehub\nurl = http://top:1\napi_key = \"top-key\"\n\n[prod]\nurl=http://prod:2\n; no key here\n[empty]\n";

    fn settings(flags: &str, env: &[(&str, &str)], file: Option<&str>) -> Result<(String, String), String> {
        let args: Vec<String> = flags.split_whitespace().map(str::to_string).chain(["list".into(), "st".into()]).collect();
        let (globals, _) = super::super::args::parse(&args).unwrap();
        let env = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        let settings = resolve(&globals, &env, Some(Path::new("/cfg")), file).map_err(|e| e.to_string())?;
        Ok((settings.url.to_string(), settings.api_key))
    }

    /// Flags, environment, config file, and what they resolve to.
    type Case<'a, T> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>, T);

    #[test]
    fn resolves_in_order() {
        let env = [("SSEHUB_URL", "http://env:3"), ("SSEHUB_API_KEY", "env-key")];
        let cases: &[Case<(&str, &str)>] = &[
            ("", &[("SSEHUB_API_KEY", "k")], None, ("http://127.0.0.1:8080", "k")),
            ("", &env, None, ("http://env:3", "env-key")),
            ("", &env, Some(FILE), ("http://env:3", "env-key")),
            ("", &[], Some(FILE), ("http://top:1", "top-key")),
            ("-p prod", &[], Some(FILE), ("http://prod:2", "top-key")),
            ("-p prod", &env, Some(FILE), ("http://prod:2", "env-key")),
            ("-p empty", &[], Some(FILE), ("http://top:1", "top-key")),
            ("--url http://flag:4 --api-key f -p prod", &env, Some(FILE), ("http://flag:4", "f")),
        ];
        for (flags, env, file, (url, key)) in cases {
            assert_eq!(settings(flags, env, *file), Ok((url.to_string(), key.to_string())), "{flags} {env:?}");
        }
    }

    #[test]
    fn explains_what_is_missing() {
        let cases: &[Case<&str>] = &[
            ("", &[], None, "no API key"),
            ("-p nope", &[], Some(FILE), "profile \"nope\" not found in /cfg"),
            ("-p prod", &[], None, "profile \"prod\" not found: there is no /cfg"),
            ("", &[("SSEHUB_API_KEY", "a b")], None, "spaces or control characters"),
            ("", &[("SSEHUB_API_KEY", "k"), ("SSEHUB_URL", "ftp://x")], None, "must start with http:// or https://"),
            ("", &[], Some("[broken\n"), "/cfg: line 1: unclosed"),
            ("", &[], Some("just words\n"), "line 1: expected key = value"),
        ];
        for (flags, env, file, want) in cases {
            let err = settings(flags, env, *file).unwrap_err();
            assert!(err.contains(want), "{flags}: {err}");
        }
    }

    #[test]
    fn finds_the_file() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(file_path(&env(&[("HOME", "/h")])), Some(PathBuf::from("/h/.config/ssehub/config")));
        assert_eq!(file_path(&env(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/x")])), Some(PathBuf::from("/x/ssehub/config")));
        assert_eq!(file_path(&env(&[])), None);
    }
}
