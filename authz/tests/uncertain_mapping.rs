//! The cases where the modelled mapping is not settled by a source at the release tag (README,
//! "`/statusz` and `/flagz` on 1.33-1.35"): exactly `/statusz` and `/flagz` on 1.33, 1.34, 1.35.
#![allow(clippy::unwrap_used)]

use kubelet_authz::kubelet::{uncertain_mapping, KubeletVersion};
use rstest::rstest;

#[rstest]
#[case(33, "/statusz", true)]
#[case(34, "/statusz", true)]
#[case(35, "/statusz", true)]
#[case(35, "/statusz/x", true)]
#[case(33, "/flagz", true)]
#[case(34, "/flagz", true)]
#[case(35, "/flagz", true)]
#[case(32, "/statusz", false)]
#[case(32, "/flagz", false)]
#[case(36, "/statusz", false)]
#[case(36, "/flagz", false)]
#[case(34, "/pods", false)]
#[case(34, "/configz", false)]
#[case(34, "/statuszx", false)]
fn uncertain_only_for_statusz_and_flagz_on_1_33_to_1_35(
    #[case] minor: u32,
    #[case] path: &str,
    #[case] uncertain: bool,
) {
    let v = KubeletVersion::new(minor).unwrap();
    assert_eq!(uncertain_mapping(v, path).is_some(), uncertain);
}
