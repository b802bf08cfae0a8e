use super::*;

fn rules(text: &[&str]) -> Vec<IdRule> {
    text.iter().map(|r| r.parse().unwrap()).collect()
}

fn map(text: &[&str]) -> IdMap {
    IdMap::new(&rules(text)).unwrap()
}

#[test]
fn every_rule_type_parses_and_prints_as_written() {
    for text in [
        "guest:0:1000:10",
        "host:1000:0:10",
        "map:5:6:7",
        "squash-guest:0:1001:4294967294",
        "squash-host:100:0:1",
        "forbid-guest:0:1",
    ] {
        let rule: IdRule = text.parse().unwrap();
        assert_eq!(rule.to_string(), text);
    }
    assert_eq!(
        "guest:1:2:3".parse::<IdRule>().unwrap(),
        IdRule::Guest {
            guest: 1,
            host: 2,
            count: 3
        }
    );
    assert_eq!(
        "host:1:2:3".parse::<IdRule>().unwrap(),
        IdRule::Host {
            host: 1,
            guest: 2,
            count: 3
        }
    );
}

#[test]
fn any_separator_and_any_case_as_in_the_rust_virtiofsd() {
    assert_eq!(
        "MAP/0/1000/1".parse::<IdRule>().unwrap(),
        "map:0:1000:1".parse().unwrap()
    );
    assert_eq!(
        "Squash-Guest 0 7 3".parse::<IdRule>().unwrap(),
        "squash-guest:0:7:3".parse().unwrap()
    );
}

#[test]
fn bad_rules_are_refused_with_a_reason() {
    for (text, why) in [
        ("", "expected"),
        ("map", "expected"),
        ("sideways:0:1:2", "unknown rule type 'sideways'"),
        ("map:0:1", "takes 3 numbers, not 2"),
        ("forbid-guest:0:1:2", "takes 2 numbers, not 3"),
        ("map:0:x:1", "'x' is not an id"),
        ("map:0:-1:1", "'-1' is not an id"),
        ("map:0:1:4294967296", "'4294967296' is not an id"),
        ("map:0:1:2:", "'' is not an id"),
        ("map:0/1/2", "'0/1/2' is not an id"),
        ("guest:4294967295:0:1", "passes 4294967294"),
        ("guest:0:4294967295:1", "passes 4294967294"),
        ("map:1:0:4294967295", "passes 4294967294"),
        ("squash-guest:0:4294967295:1", "passes 4294967294"),
    ] {
        let err = text.parse::<IdRule>().unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
    // The largest range that can be: every id but -1.
    assert!("squash-guest:0:1001:4294967295".parse::<IdRule>().is_ok());
}

#[test]
fn an_empty_map_translates_nothing() {
    let m = IdMap::default();
    assert!(m.is_empty());
    for id in [0, 1, 1000, 65534, u32::MAX] {
        assert_eq!(m.to_host(id), Ok(id));
        assert_eq!(m.to_guest(id), id);
    }
}

#[test]
fn guest_and_host_rules_go_one_way_each() {
    let m = map(&["guest:10:1000:5"]);
    assert_eq!(m.to_host(9), Ok(9));
    assert_eq!(m.to_host(10), Ok(1000));
    assert_eq!(m.to_host(14), Ok(1004));
    assert_eq!(m.to_host(15), Ok(15));
    assert_eq!(m.to_guest(1000), 1000, "no host → guest rule");

    let m = map(&["host:1000:10:5"]);
    assert_eq!(m.to_guest(999), 999);
    assert_eq!(m.to_guest(1000), 10);
    assert_eq!(m.to_guest(1004), 14);
    assert_eq!(m.to_guest(1005), 1005);
    assert_eq!(m.to_host(10), Ok(10), "no guest → host rule");
}

#[test]
fn map_goes_both_ways() {
    let m = map(&["map:0:100000:65536"]);
    assert_eq!(m.to_host(0), Ok(100000));
    assert_eq!(m.to_host(65535), Ok(165535));
    assert_eq!(m.to_host(65536), Ok(65536));
    assert_eq!(m.to_guest(100000), 0);
    assert_eq!(m.to_guest(165535), 65535);
    assert_eq!(m.to_guest(0), 0, "host 0 is outside the host range");
}

#[test]
fn squash_rules_take_a_range_to_one_id() {
    let m = map(&["squash-guest:0:1001:4294967295", "squash-host:1001:1000:1"]);
    for id in [0, 1, 1000, 4294967294] {
        assert_eq!(m.to_host(id), Ok(1001));
    }
    assert_eq!(m.to_host(u32::MAX), Ok(u32::MAX), "-1 is never translated");
    assert_eq!(m.to_guest(1001), 1000);
    assert_eq!(m.to_guest(0), 0);
    assert_eq!(m.to_guest(1002), 1002);
}

#[test]
fn forbid_guest_refuses_its_range_only() {
    let m = map(&["forbid-guest:1000:2", "map:0:500:1"]);
    assert_eq!(m.to_host(999), Ok(999));
    assert_eq!(m.to_host(1000), Err(Forbidden(1000)));
    assert_eq!(m.to_host(1001), Err(Forbidden(1001)));
    assert_eq!(m.to_host(1002), Ok(1002));
    assert_eq!(m.to_host(0), Ok(500));
    assert_eq!(
        m.to_guest(1000),
        1000,
        "forbid-guest says nothing of host ids"
    );
}

#[test]
fn the_readme_example_of_the_rust_virtiofsd() {
    // Everything the guest does is done as 1001:100; files of 1001:100 appear as 1000:1000.
    let uid = map(&["squash-guest:0:1001:4294967295", "host:1001:1000:1"]);
    let gid = map(&["squash-guest:0:100:4294967295", "host:100:1000:1"]);
    assert_eq!((uid.to_host(0), gid.to_host(0)), (Ok(1001), Ok(100)));
    assert_eq!((uid.to_host(1000), gid.to_host(5)), (Ok(1001), Ok(100)));
    assert_eq!((uid.to_guest(1001), gid.to_guest(100)), (1000, 1000));
    assert_eq!(
        (uid.to_guest(0), gid.to_guest(0)),
        (0, 0),
        "others unchanged"
    );
}

#[test]
fn many_rules_are_found_by_range() {
    let text: Vec<String> = (0..50)
        .map(|i| format!("map:{}:{}:10", i * 100, 50_000 + i * 10))
        .collect();
    let text: Vec<&str> = text.iter().map(String::as_str).collect();
    let m = map(&text);
    for i in 0..50u32 {
        for k in [0, 9] {
            assert_eq!(m.to_host(i * 100 + k), Ok(50_000 + i * 10 + k));
            assert_eq!(m.to_guest(50_000 + i * 10 + k), i * 100 + k);
        }
        assert_eq!(m.to_host(i * 100 + 10), Ok(i * 100 + 10));
    }
}

#[test]
fn overlapping_sources_in_one_direction_are_refused() {
    let err = IdMap::new(&rules(&["guest:0:1000:10", "squash-guest:9:5:1"])).unwrap_err();
    assert!(
        err.contains("squash-guest:9:5:1 overlaps guest:0:1000:10"),
        "{err}"
    );
    assert!(err.contains("guest ids 9..=9 and 0..=9"), "{err}");
    let err = IdMap::new(&rules(&["map:0:1000:10", "host:1005:0:1"])).unwrap_err();
    assert!(err.contains("host ids"), "{err}");
    assert!(IdMap::new(&rules(&["forbid-guest:0:1", "map:0:1:1"])).is_err());
    // The same ids in the two directions are not an overlap; neither are adjacent ranges.
    assert!(IdMap::new(&rules(&["guest:0:1000:10", "host:0:1000:10"])).is_ok());
    assert!(IdMap::new(&rules(&["guest:0:1000:10", "guest:10:0:10"])).is_ok());
    // A count of 0 covers nothing (accepted, as by the Rust virtiofsd).
    let m = map(&["guest:5:6:0", "guest:5:7:1"]);
    assert_eq!(m.to_host(5), Ok(7));
}
