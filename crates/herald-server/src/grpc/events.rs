//! `Events.Publish`, `Events.Read` and `Events.EventHistory`; `Subscribe` lives in `subscribe.rs`.

use herald_model::Code;
use std::sync::Arc;

use herald_core::EventError;
use herald_proto::v1::events_server::Events;
use herald_proto::v1::{
    EventHistoryRequest, EventHistoryResponse, PublishRequest, PublishResponse, ReadRequest, ReadResponse,
    SubscribeRequest,
};
use herald_proto::{event_from_proto, event_history_to_proto, receipt_to_proto, status, stored_to_proto};
use tonic::{Request, Response, Status, Streaming};

use super::subscribe::{self, SubscribeStream};
use super::{blocking, caller, cut_to_size, denied};
use crate::AppState;
use crate::auth::{Action, Resource};

pub(super) struct EventsService {
    pub(super) state: Arc<AppState>,
}

impl EventsService {
    /// A call refused for who made it: audited, then answered.
    fn refused(
        &self,
        p: &crate::auth::Principal,
        peer: Option<std::net::IpAddr>,
        method: &str,
        topic: &str,
        d: crate::auth::Denied,
    ) -> Status {
        self.state.audit.record(&p.name, peer, "grpc", method, &format!("topic/{topic}"), d.code.as_str());
        denied(d)
    }
}

/// Counts one request by method and outcome.
pub(super) fn count_request<T>(method: &'static str, r: &Result<T, Status>) {
    let code = match r {
        Ok(_) => "ok",
        Err(s) => herald_proto::code_of(s).as_str(),
    };
    metrics::counter!("herald_server_requests_total", "api" => "grpc", "method" => method, "code" => code).increment(1);
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let req = request.into_inner();
        let bytes: usize = req.events.iter().map(prost::Message::encoded_len).sum();
        let r = match p.check(Action::Publish, Resource::Topic(&req.topic)) {
            Ok(()) => match self.state.guard.meter.publish(&p, req.events.len(), bytes) {
                Ok(()) => publish(&self.state, req).await,
                Err(d) => Err(denied(d)),
            },
            Err(d) => Err(self.refused(&p, peer, "Publish", &req.topic, d)),
        };
        count_request("Publish", &r);
        r.map(Response::new)
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let r = subscribe::start(self.state.clone(), p.clone(), request.into_inner()).await;
        if let Err(s) = &r
            && herald_proto::code_of(s) == Code::PermissionDenied
        {
            self.state.audit.record(&p.name, peer, "grpc", "Subscribe", "-", Code::PermissionDenied.as_str());
        }
        count_request("Subscribe", &r);
        r.map(Response::new)
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let req = request.into_inner();
        let r = match p.check(Action::Consume, Resource::Topic(&req.topic)) {
            Ok(()) => read(&self.state, req).await,
            Err(d) => Err(self.refused(&p, peer, "Read", &req.topic, d)),
        };
        count_request("Read", &r);
        r.map(Response::new)
    }

    async fn event_history(
        &self,
        request: Request<EventHistoryRequest>,
    ) -> Result<Response<EventHistoryResponse>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let req = request.into_inner();
        let r = match p.check(Action::Consume, Resource::Topic(&req.topic)) {
            Ok(()) => {
                let found = if req.id.is_empty() {
                    self.state.broker.event_history(&req.topic, req.partition, req.offset).await
                } else {
                    self.state.broker.event_history_by_id(&req.topic, &req.id).await
                };
                // Only the groups the caller may see (members, reasons and DLQ offsets are theirs).
                found
                    .map(|mut h| {
                        h.groups.retain(|g| p.sees(Resource::Group(&g.group)));
                        event_history_to_proto(&h)
                    })
                    .map_err(|e| crate::grpc::broker_status(&e))
            }
            Err(d) => Err(self.refused(&p, peer, "EventHistory", &req.topic, d)),
        };
        count_request("EventHistory", &r);
        r.map(Response::new)
    }
}

async fn publish(state: &AppState, req: PublishRequest) -> Result<PublishResponse, Status> {
    let max = state.config.max_batch_events;
    let n = req.events.len();
    if n == 0 {
        return Err(status(Code::InvalidArgument, "the publish request holds no events; send at least one"));
    }
    if n > max {
        return Err(status(
            Code::RequestTooLarge,
            format!(
                "the publish request holds {n} events; the limit is {max} (max_batch_events): split it into \
                 requests of at most {max} events"
            ),
        ));
    }
    let limits = state.config.limits();
    let mut events = Vec::with_capacity(n);
    for (i, p) in req.events.into_iter().enumerate() {
        match event_from_proto(p, &limits) {
            Ok(e) => events.push(e),
            Err(e) => {
                let code = match e {
                    EventError::EventTooLarge { .. } => Code::EventTooLarge,
                    _ => Code::InvalidEvent,
                };
                // Proto3 cannot leave a string unset: the builder's advice does not apply here.
                let why = match e {
                    EventError::EmptyId => {
                        "Event.id is empty; set a unique id (a UUIDv7, say): the broker stores an id once per \
                         source, so a retry with the same id is not stored twice"
                            .to_owned()
                    }
                    e => e.to_string(),
                };
                return Err(status(code, format!("event {i} of the batch (counting from 0) is invalid: {why}")));
            }
        }
    }
    let receipts = state.broker.publish_batch(&req.topic, events).await.map_err(|e| crate::grpc::broker_status(&e))?;
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    metrics::counter!("herald_server_published_events_total", "api" => "grpc")
        .increment((receipts.len() - duplicates) as u64);
    if duplicates > 0 {
        metrics::counter!("herald_server_duplicate_events_total", "api" => "grpc").increment(duplicates as u64);
    }
    Ok(PublishResponse { receipts: receipts.iter().map(receipt_to_proto).collect() })
}

async fn read(state: &AppState, req: ReadRequest) -> Result<ReadResponse, Status> {
    let max = state.config.max_read_events;
    if req.limit == 0 {
        return Err(status(Code::InvalidArgument, format!("read limit is 0; ask for 1 to {max} events")));
    }
    // More than `max_read_events` is answered with that many, as DlqList does: fewer than asked
    // for is a normal answer, and a client cannot know this server's limit.
    let limit = (req.limit as usize).min(max);
    let ReadRequest { topic, partition, offset, .. } = req;
    let stored = blocking(&state.broker, move |b| b.read(&topic, partition, offset, limit)).await?;
    // Fewer than asked for is a normal answer: the client reads on from the last offset + 1.
    let mut events: Vec<_> = stored.iter().map(stored_to_proto).collect();
    cut_to_size(&mut events);
    Ok(ReadResponse { events })
}
