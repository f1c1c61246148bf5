use super::*;

fn cmd(args: &[&str]) -> Command {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    Command::from_args(&args)
}

fn err(r: Result<HelloArgs<'_>, Bytes>) -> String {
    String::from_utf8(r.unwrap_err().to_vec()).unwrap()
}

fn creds(user: Option<&str>, pass: &str) -> Creds {
    (user.map(str::to_string), pass.to_string())
}

#[test]
fn auth_arguments() {
    assert_eq!(auth_args(&cmd(&["AUTH", "pw"])), Some(creds(None, "pw")));
    assert_eq!(
        auth_args(&cmd(&["auth", "bob", "pw"])),
        Some(creds(Some("bob"), "pw"))
    );
    assert_eq!(auth_args(&cmd(&["AUTH"])), None);
    assert_eq!(auth_args(&cmd(&["AUTH", "a", "b", "c"])), None);
}

#[test]
fn hello_alone_changes_nothing() {
    let c = cmd(&["HELLO"]);
    let a = parse_hello(&c).unwrap();
    assert_eq!(
        a,
        HelloArgs {
            proto: None,
            auth: None,
            setname: None
        }
    );
    assert_eq!(a.into_hook(), Hook::None);
}

#[test]
fn hello_versions() {
    let c = cmd(&["HELLO", "3"]);
    assert_eq!(
        parse_hello(&c).unwrap().into_hook(),
        Hook::Proto(Proto::Resp3)
    );
    let c = cmd(&["HELLO", "2"]);
    assert_eq!(parse_hello(&c).unwrap().proto, Some(Proto::Resp2));
    for v in ["1", "4", "-3"] {
        assert_eq!(
            err(parse_hello(&cmd(&["HELLO", v]))),
            "-NOPROTO unsupported protocol version\r\n",
            "HELLO {v}"
        );
    }
    for v in ["+3", "03", "three", "3.0", ""] {
        assert_eq!(
            err(parse_hello(&cmd(&["HELLO", v]))),
            "-ERR Protocol version is not an integer or out of range\r\n",
            "HELLO {v:?}"
        );
    }
}

#[test]
fn hello_options() {
    let c = cmd(&["HELLO", "3", "auth", "bob", "pw", "SETNAME", "app"]);
    let a = parse_hello(&c).unwrap();
    assert_eq!(
        a,
        HelloArgs {
            proto: Some(Proto::Resp3),
            auth: Some(creds(Some("bob"), "pw")),
            setname: Some(&b"app"[..]),
        }
    );
    assert_eq!(
        a.into_hook(),
        Hook::Identity(creds(Some("bob"), "pw"), Some(Proto::Resp3))
    );
    // The last SETNAME wins.
    let c = cmd(&["HELLO", "2", "SETNAME", "a", "setname", "b"]);
    assert_eq!(parse_hello(&c).unwrap().setname, Some(&b"b"[..]));
}

#[test]
fn hello_option_errors() {
    assert_eq!(
        err(parse_hello(&cmd(&["HELLO", "3", "AUTH", "bob"]))),
        "-ERR Syntax error in HELLO option 'AUTH'\r\n"
    );
    assert_eq!(
        err(parse_hello(&cmd(&["HELLO", "3", "SETNAME"]))),
        "-ERR Syntax error in HELLO option 'SETNAME'\r\n"
    );
    assert_eq!(
        err(parse_hello(&cmd(&["HELLO", "3", "FOO"]))),
        "-ERR Syntax error in HELLO option 'FOO'\r\n"
    );
    assert_eq!(
        err(parse_hello(&cmd(&["HELLO", "3", "SETNAME", "a b"]))),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    // The version is checked before the options.
    assert_eq!(
        err(parse_hello(&cmd(&["HELLO", "9", "FOO"]))),
        "-NOPROTO unsupported protocol version\r\n"
    );
}

#[test]
fn unauthenticated_commands() {
    for ok in [&["AUTH", "x"][..], &["hello", "3"], &["QUIT"]] {
        assert!(allowed_unauthenticated(&cmd(ok)), "{ok:?}");
    }
    assert!(!allowed_unauthenticated(&cmd(&["GET", "k"])));
    assert!(!allowed_unauthenticated(&cmd(&["PING"])));
}

#[test]
fn constant_time_comparison() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"secret!"));
    assert!(constant_time_eq(b"", b""));
}
