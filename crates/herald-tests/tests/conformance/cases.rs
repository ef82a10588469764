//! The conformance cases, listed once: `conformance!(module, harness)` makes one test per case
//! of `suite.rs` against the backend that `harness` reaches. Every backend's test binary uses
//! this list (`tests/conformance/main.rs`, `tests/nats/main.rs`), so a new case runs everywhere.

macro_rules! conformance {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use crate::suite;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        suite::$name(&$harness).await;
                    }
                };
            }

            case!(publish_subscribe_keeps_payload_and_headers);
            case!(concurrent_publishers_and_subscribers);
            case!(many_topics_at_once);
            case!(redelivery_after_nack);
            case!(no_next_event_of_a_key_before_the_ack);
            case!(continue_after_a_subscriber_closes);
            case!(continue_after_errors);
            case!(order_per_key_with_several_subscribers);
            case!(publisher_close_loses_nothing);
            case!(producer_keeps_publish_order_per_key);
            case!(topics_are_isolated);
            case!(broker_restart_mid_stream_loses_nothing);
            case!(consumer_groups_are_independent);
            case!(backoff_within_bounds);
            case!(max_attempts_then_dlq_with_every_header);
            case!(permanent_error_goes_to_dlq_at_once);
            case!(dlq_replay_reaches_only_the_failed_group);
            case!(event_history_through_dlq_and_replay);
            case!(schemas_are_enforced_on_publish_and_evolve_by_their_rule);
            case!(dedupe_by_event_id);
            case!(correlation_and_causation_propagate);
            case!(lag_is_reported_and_falls_to_zero);
            case!(rebalance_when_a_member_leaves);
            case!(handler_panics_and_timeouts_are_failed_attempts);
            case!(non_blocking_retries_let_the_key_move_on);
            case!(concurrent_close);
        }
    };
}
