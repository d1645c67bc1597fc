use super::*;

#[test]
fn stat_fields_are_counted_after_the_command_name() {
    let stat = "4242 (call gate) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                250 75 0 0 20 0 9 0 1000 123456 789 18446744073709551615";
    assert_eq!(cpu_time(stat), Some(Duration::from_millis(3_250)));
    assert_eq!(cpu_time("4242 (x) S 1"), None);
    assert_eq!(cpu_time(""), None);
}

#[test]
fn status_and_limits_lines_are_read() {
    let status = "Name:\tcallgate\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n";
    assert_eq!(status_kib(status, "VmRSS"), Some(10_240));
    assert_eq!(status_kib(status, "VmHWM"), Some(20_480));
    assert_eq!(status_kib(status, "VmSwap"), None);
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max open files            1024                 524288               files\n\
                  Max locked memory         unlimited            unlimited            bytes\n";
    assert_eq!(soft_limit(limits, "Max open files"), Some(1024));
    assert_eq!(soft_limit(limits, "Max locked memory"), None);
}

#[test]
fn our_own_process_can_be_read() {
    let me = read(Process::Myself).expect("/proc/self is readable on Linux");
    assert!(me.rss_bytes > 0);
    let pid = std::process::id();
    assert!(read(Process::Pid(pid)).is_ok());
}

#[test]
fn machine_times_add_up_busy_and_idle_ticks() {
    let stat = "cpu  100 5 50 1000 20 3 2 10 7 0\ncpu0 50 2 25 500 10 1 1 5 3 0\nintr 1\n";
    let m = machine_times(stat).expect("a cpu line");
    assert_eq!(m.busy, Duration::from_millis(1_700));
    assert_eq!(m.idle, Duration::from_millis(10_200));
    assert_eq!(m.cpus, 1);
    assert_eq!(machine_times("intr 1\n"), None);
    assert!(read_machine().expect("/proc/stat").busy > Duration::ZERO);
}

#[test]
fn udp_counters_are_read_by_column_name() {
    let snmp = "Ip: Forwarding\nIp: 1\n\
                Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
                Udp: 7425904 6187 244554 7679370 244550 3 0\n\
                UdpLite: InDatagrams\nUdpLite: 0\n";
    let udp = udp_counters(snmp).expect("Udp lines");
    assert_eq!(
        (
            udp.receive_buffer_errors,
            udp.send_buffer_errors,
            udp.in_errors
        ),
        (244_550, 3, 244_554)
    );
    assert_eq!(udp_counters("Ip: 1\n"), None);
    assert!(read_udp().is_ok());
}
