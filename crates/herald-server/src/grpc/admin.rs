//! The `Admin` service: topics, groups, dead letters and schemas.

use std::sync::Arc;

use herald_model::Code;
use herald_proto::v1::admin_server::Admin;
use herald_proto::v1::{
    Count, CreateTopicRequest, DamageSkipped, DeadLetter, DlqListRequest, DlqListResponse, Empty, GroupInfo, GroupName,
    Identity, JsonDocument, ListGroupsResponse, ListTopicsRequest, ListTopicsResponse, ResetGroupRequest, SchemaCheck,
    SchemaList, SchemaPolicy, SchemaPolicyChange, SchemaRef, SchemaRegistration, SchemaVersion, SkipDamagedRequest,
    TopicInfo, TopicName,
};
use herald_proto::{
    event_to_proto, group_info_to_proto, new_schema_from_proto, position_from_proto, schema_policy_from_proto,
    schema_policy_to_proto, schema_problem_to_proto, schema_version_to_proto, status, topic_config_from_proto,
    topic_info_to_proto,
};
use tonic::{Request, Response, Status};

use super::events::count_request;
use super::{blocking, caller, cut_to_size, denied};
use crate::AppState;
use crate::auth::{Action, Resource};

pub(super) struct AdminService {
    pub(super) state: Arc<AppState>,
}

/// What the audit needs of one admin call.
struct Audited<'a> {
    state: &'a AppState,
    principal: &'a str,
    peer: Option<std::net::IpAddr>,
    /// `Some` for the actions audited whatever their outcome; the others only when refused.
    action: Option<&'static str>,
    target: String,
}

/// Runs one admin call, counts it and audits it.
async fn counted<T>(
    method: &'static str,
    audit: Audited<'_>,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let r = f.await;
    count_request(method, &r);
    let code = r.as_ref().err().map(herald_proto::code_of);
    let refused = matches!(code, Some(herald_model::Code::PermissionDenied | herald_model::Code::Unauthenticated));
    if audit.action.is_some() || refused {
        let action = audit.action.unwrap_or(method);
        let outcome = code.map_or("ok", herald_model::Code::as_str);
        audit.state.audit.record(audit.principal, audit.peer, "grpc", action, &audit.target, outcome);
    }
    r.map(Response::new)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(&self, request: Request<CreateTopicRequest>) -> Result<Response<TopicInfo>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let CreateTopicRequest { name, config, if_not_exists } = request.into_inner();
        let config = topic_config_from_proto(config.unwrap_or_default());
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("create_topic"),
            target: format!("topic/{name}"),
        };
        counted("CreateTopic", audit, async {
            p.check(Action::Admin, Resource::Topic(&name)).map_err(denied)?;
            let place = self.state.guard.owners.reserve(&p, &name, config.partitions).map_err(denied)?;
            let name = name.clone();
            // As the SDK's ensure_topic: an existing topic is described as it is.
            let (info, _) = blocking(&self.state.broker, move |b| {
                crate::auth::owners::create_topic(b, place, &name, config, if_not_exists)
            })
            .await?;
            Ok(topic_info_to_proto(&info))
        })
        .await
    }

    async fn list_topics(&self, request: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: None, target: "topics".to_owned() };
        counted("ListTopics", audit, async {
            let mut names = self.state.broker.list_topics();
            names.retain(|t| p.sees(Resource::Topic(t)));
            Ok(ListTopicsResponse { names })
        })
        .await
    }

    async fn describe_topic(&self, request: Request<TopicName>) -> Result<Response<TopicInfo>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let name = request.into_inner().name;
        let audit =
            Audited { state: &self.state, principal: &p.name, peer, action: None, target: format!("topic/{name}") };
        counted("DescribeTopic", audit, async {
            p.check_any(Resource::Topic(&name)).map_err(denied)?;
            let info = blocking(&self.state.broker, move |b| b.describe_topic(&name)).await?;
            Ok(topic_info_to_proto(&info))
        })
        .await
    }

    async fn delete_topic(&self, request: Request<TopicName>) -> Result<Response<Empty>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let name = request.into_inner().name;
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("delete_topic"),
            target: format!("topic/{name}"),
        };
        counted("DeleteTopic", audit, async {
            p.check(Action::Admin, Resource::Topic(&name)).map_err(denied)?;
            let owners = self.state.guard.owners.clone();
            blocking(&self.state.broker, move |b| crate::auth::owners::delete_topic(b, &owners, &name)).await?;
            Ok(Empty {})
        })
        .await
    }

    async fn list_groups(&self, request: Request<Empty>) -> Result<Response<ListGroupsResponse>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: None, target: "groups".to_owned() };
        counted("ListGroups", audit, async {
            let mut names = self.state.broker.list_groups();
            names.retain(|g| p.sees(Resource::Group(g)));
            Ok(ListGroupsResponse { names })
        })
        .await
    }

    async fn describe_group(&self, request: Request<GroupName>) -> Result<Response<GroupInfo>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let group = request.into_inner().group;
        let audit =
            Audited { state: &self.state, principal: &p.name, peer, action: None, target: format!("group/{group}") };
        counted("DescribeGroup", audit, async {
            p.check_any(Resource::Group(&group)).map_err(denied)?;
            let info = blocking(&self.state.broker, move |b| b.describe_group(&group)).await?;
            Ok(group_info_to_proto(&info))
        })
        .await
    }

    async fn reset_group(&self, request: Request<ResetGroupRequest>) -> Result<Response<GroupInfo>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let ResetGroupRequest { group, to } = request.into_inner();
        let to = position_from_proto(to);
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("reset_group"),
            target: format!("group/{group}"),
        };
        counted("ResetGroup", audit, async {
            p.check(Action::Admin, Resource::Group(&group)).map_err(denied)?;
            let info = blocking(&self.state.broker, move |b| b.reset_group(&group, to)).await?;
            Ok(group_info_to_proto(&info))
        })
        .await
    }

    async fn skip_damaged(&self, request: Request<SkipDamagedRequest>) -> Result<Response<DamageSkipped>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let SkipDamagedRequest { group, topic, partition } = request.into_inner();
        let broker = self.state.broker.clone();
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("skip_damaged"),
            target: format!("group/{group}"),
        };
        let check = p.check(Action::Admin, Resource::Group(&group));
        counted("SkipDamaged", audit, async move {
            check.map_err(denied)?;
            let skipped =
                broker.skip_damaged(&group, &topic, partition).await.map_err(|e| crate::grpc::broker_status(&e))?;
            Ok(herald_proto::damage_skipped_to_proto(&skipped))
        })
        .await
    }

    /// Dead letters, oldest first: at most `max` (0 or more than `max_read_events` mean
    /// `max_read_events`), and no more than fit in [`super::RESPONSE_BYTES_TARGET`].
    async fn dlq_list(&self, request: Request<DlqListRequest>) -> Result<Response<DlqListResponse>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let DlqListRequest { group, max } = request.into_inner();
        let cap = self.state.config.max_read_events;
        let max = match max as usize {
            0 => cap,
            n => n.min(cap),
        };
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("dlq_list"),
            target: format!("group/{group}"),
        };
        counted("DlqList", audit, async {
            p.check(Action::Dlq, Resource::Group(&group)).map_err(denied)?;
            let letters = blocking(&self.state.broker, move |b| b.dlq_list(&group, max)).await?;
            let mut dead_letters: Vec<DeadLetter> = letters
                .iter()
                .map(|l| DeadLetter { dlq_offset: l.dlq_offset, event: Some(event_to_proto(&l.event)) })
                .collect();
            cut_to_size(&mut dead_letters);
            Ok(DlqListResponse { dead_letters })
        })
        .await
    }

    async fn dlq_replay(&self, request: Request<GroupName>) -> Result<Response<Count>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let group = request.into_inner().group;
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("dlq_replay"),
            target: format!("group/{group}"),
        };
        counted("DlqReplay", audit, async {
            p.check(Action::Dlq, Resource::Group(&group)).map_err(denied)?;
            let n = self.state.broker.dlq_replay(&group).await.map_err(|e| crate::grpc::broker_status(&e))?;
            Ok(Count { count: n as u64 })
        })
        .await
    }

    async fn dlq_purge(&self, request: Request<GroupName>) -> Result<Response<Count>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let group = request.into_inner().group;
        let audit = Audited {
            state: &self.state,
            principal: &p.name,
            peer,
            action: Some("dlq_purge"),
            target: format!("group/{group}"),
        };
        counted("DlqPurge", audit, async {
            p.check(Action::Dlq, Resource::Group(&group)).map_err(denied)?;
            let n = self.state.broker.dlq_purge(&group).await.map_err(|e| crate::grpc::broker_status(&e))?;
            Ok(Count { count: n })
        })
        .await
    }

    async fn who_am_i(&self, request: Request<Empty>) -> Result<Response<Identity>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: None, target: "whoami".to_owned() };
        counted("WhoAmI", audit, async {
            Ok(Identity {
                principal: p.name.to_string(),
                anonymous: p.anonymous,
                permissions: p.permissions().iter().map(ToString::to_string).collect(),
                expires_ms: p.expires_ms,
            })
        })
        .await
    }

    async fn register_schema(&self, request: Request<SchemaRegistration>) -> Result<Response<SchemaVersion>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let r = request.into_inner();
        let target = format!("topic/{}", r.topic);
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: Some("register_schema"), target };
        counted("RegisterSchema", audit, async {
            p.check(Action::Admin, Resource::Topic(&r.topic)).map_err(denied)?;
            let (topic, s) = new_schema_from_proto(r).map_err(|e| status(Code::InvalidArgument, e))?;
            let v = blocking(&self.state.broker, move |b| b.register_schema(&topic, s)).await?;
            Ok(schema_version_to_proto(&v))
        })
        .await
    }

    async fn check_schema(&self, request: Request<SchemaRegistration>) -> Result<Response<SchemaCheck>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let r = request.into_inner();
        let target = format!("topic/{}", r.topic);
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: None, target };
        counted("CheckSchema", audit, async {
            p.check_any(Resource::Topic(&r.topic)).map_err(denied)?;
            let (topic, s) = new_schema_from_proto(r).map_err(|e| status(Code::InvalidArgument, e))?;
            let problems = blocking(&self.state.broker, move |b| b.check_schema(&topic, &s)).await?;
            Ok(SchemaCheck {
                compatible: problems.is_empty(),
                problems: problems.iter().map(schema_problem_to_proto).collect(),
            })
        })
        .await
    }

    async fn list_schemas(&self, request: Request<TopicName>) -> Result<Response<SchemaList>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let topic = request.into_inner().name;
        let audit =
            Audited { state: &self.state, principal: &p.name, peer, action: None, target: format!("topic/{topic}") };
        counted("ListSchemas", audit, async {
            p.check_any(Resource::Topic(&topic)).map_err(denied)?;
            let (policy, schemas) = blocking(&self.state.broker, move |b| b.list_schemas(&topic)).await?;
            Ok(SchemaList {
                policy: Some(schema_policy_to_proto(&policy)),
                schemas: schemas.iter().map(schema_version_to_proto).collect(),
            })
        })
        .await
    }

    async fn get_schema(&self, request: Request<SchemaRef>) -> Result<Response<SchemaVersion>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let SchemaRef { topic, r#type, version } = request.into_inner();
        let audit =
            Audited { state: &self.state, principal: &p.name, peer, action: None, target: format!("topic/{topic}") };
        counted("GetSchema", audit, async {
            p.check_any(Resource::Topic(&topic)).map_err(denied)?;
            let v = blocking(&self.state.broker, move |b| b.schema(&topic, &r#type, version)).await?;
            Ok(schema_version_to_proto(&v))
        })
        .await
    }

    async fn delete_schema(&self, request: Request<SchemaRef>) -> Result<Response<Count>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let SchemaRef { topic, r#type, .. } = request.into_inner();
        let target = format!("topic/{topic}");
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: Some("delete_schema"), target };
        counted("DeleteSchema", audit, async {
            p.check(Action::Admin, Resource::Topic(&topic)).map_err(denied)?;
            let n = blocking(&self.state.broker, move |b| b.delete_schema(&topic, &r#type)).await?;
            Ok(Count { count: n as u64 })
        })
        .await
    }

    async fn set_schema_policy(&self, request: Request<SchemaPolicyChange>) -> Result<Response<SchemaPolicy>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let SchemaPolicyChange { topic, policy } = request.into_inner();
        let target = format!("topic/{topic}");
        let audit = Audited { state: &self.state, principal: &p.name, peer, action: Some("set_schema_policy"), target };
        counted("SetSchemaPolicy", audit, async {
            p.check(Action::Admin, Resource::Topic(&topic)).map_err(denied)?;
            let policy =
                schema_policy_from_proto(policy.unwrap_or_default()).map_err(|e| status(Code::InvalidArgument, e))?;
            let set = blocking(&self.state.broker, move |b| b.set_schema_policy(&topic, policy)).await?;
            Ok(schema_policy_to_proto(&set))
        })
        .await
    }

    async fn async_api(&self, request: Request<Empty>) -> Result<Response<JsonDocument>, Status> {
        let p = caller(&request)?;
        let peer = super::peer(&request);
        let audit =
            Audited { state: &self.state, principal: &p.name, peer, action: None, target: "asyncapi".to_owned() };
        let host = self.state.config.http.to_string();
        counted("AsyncApi", audit, async {
            let principal = p.clone();
            let doc =
                blocking(&self.state.broker, move |b| Ok(crate::http::asyncapi::build(b, &principal, &host))).await?;
            Ok(JsonDocument { json: doc.to_string() })
        })
        .await
    }
}
