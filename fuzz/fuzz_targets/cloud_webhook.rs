#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bitbucket_automation_fuzz::webhook::check_cloud(data));
