//! The XEP-0060 requests one session makes: subscribe (with the full JID,
//! so notifications reach this session), publish an outbox item, create a
//! node with persistent items; and reading vote items out of
//! notifications. Each IQ is bounded by [`IQ_TIMEOUT`].

use futures_util::FutureExt;
use tokio_xmpp::IqRequest;
use tokio_xmpp::IqResponse;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::pubsub::{self, NodeName, PubSub};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::{IQ_TIMEOUT, Publishing, payload};

/// Why a request failed. Each ends the session (it is retried), but for
/// [`IqError::NotXml`]: that row is dropped so the rest can go.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum IqError {
    #[error("the server did not answer a {0}")]
    Timeout(&'static str),
    #[error("{what} failed: {detail}")]
    Stream { what: &'static str, detail: String },
    #[error("the connection is stalled (cannot send)")]
    Stalled,
    #[error("outbox row {row} is not XML: {detail}")]
    NotXml { row: i64, detail: String },
    #[error("{what} refused: {condition}")]
    Refused { what: String, condition: String },
    #[error("cannot create node {node}: {condition} (may the account create nodes on {service}?)")]
    CreateRefused {
        node: String,
        condition: String,
        service: String,
    },
}

fn stream(what: &'static str, e: impl std::fmt::Debug) -> IqError {
    IqError::Stream {
        what,
        detail: format!("{e:?}"),
    }
}
use crate::station::{OutboxItem, RemoteTally};
use crate::sys::clock::now_ms;

pub(super) fn node_uri(service: &str, node: &str) -> String {
    format!("xmpp:{service}?;node={node}")
}

/// Subscribe this session to a node: Ok(false) when the service refuses
/// (typically: the node does not exist yet); Err when the connection fails.
pub(super) async fn subscribe(
    sender: &tokio_xmpp::ClientSender,
    bound: &Jid,
    (svc, node): &(String, String),
) -> Result<bool, IqError> {
    let Ok(to) = svc.parse::<Jid>() else {
        return Ok(false);
    };
    let req = PubSub::Subscribe {
        // The full JID: notifications reach this session without our
        // sending presence; each session subscribes again.
        subscribe: Some(pubsub::pubsub::Subscribe {
            jid: bound.clone(),
            node: Some(NodeName(node.clone())),
        }),
        options: None,
    };
    match iq(sender, &to, IqRequest::Set(req.into()), "subscribe").await? {
        IqResponse::Result(_) => {
            tracing::info!(node = %node_uri(svc, node), "xmpp: subscribed");
            Ok(true)
        }
        IqResponse::Error(e) => {
            tracing::info!(node = %node_uri(svc, node), condition = ?e.defined_condition, "xmpp: subscription refused; trying again later");
            Ok(false)
        }
    }
}

pub(super) async fn publish(
    sender: &tokio_xmpp::ClientSender,
    service: &Jid,
    item: OutboxItem,
) -> Result<Publishing, IqError> {
    let payload: Element = item.payload.parse().map_err(|e| IqError::NotXml {
        row: item.id,
        detail: format!("{e}"),
    })?;
    let req = PubSub::Publish {
        publish: pubsub::pubsub::Publish {
            node: NodeName(item.node.clone()),
            items: vec![pubsub::pubsub::Item {
                id: Some(pubsub::ItemId(item.item_id.clone())),
                publisher: None,
                payload: Some(payload),
            }],
        },
        publish_options: None,
    };
    // The client's send queue is short and does not drain while the link is
    // down (tokio-xmpp reconnects silently): bound the wait for room in it.
    let token = tokio::time::timeout(
        IQ_TIMEOUT,
        sender.send_iq(Some(service.clone()), IqRequest::Set(req.into())),
    )
    .await
    .map_err(|_| IqError::Stalled)?;
    Ok(async move {
        let r = match tokio::time::timeout(IQ_TIMEOUT, token).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(stream("publish", e)),
            Err(_) => Err(IqError::Timeout("publish")),
        };
        (item, r)
    }
    .boxed())
}

/// One IQ, bounded: waiting for room in the client's send queue (it does
/// not drain while the link is down) and for the answer.
pub(super) async fn iq(
    sender: &tokio_xmpp::ClientSender,
    to: &Jid,
    req: IqRequest,
    what: &'static str,
) -> Result<IqResponse, IqError> {
    let token = tokio::time::timeout(IQ_TIMEOUT, sender.send_iq(Some(to.clone()), req))
        .await
        .map_err(|_| IqError::Stalled)?;
    match tokio::time::timeout(IQ_TIMEOUT, token).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(stream(what, e)),
        Err(_) => Err(IqError::Timeout(what)),
    }
}

pub(super) fn refused(
    what: impl Into<String>,
    e: &tokio_xmpp::parsers::stanza_error::StanzaError,
) -> IqError {
    IqError::Refused {
        what: what.into(),
        condition: format!(
            "{:?} {}",
            e.defined_condition,
            e.texts.values().next().map_or("", String::as_str)
        ),
    }
}

/// What an affiliation lets another account do with a node (XEP-0060 §4.1).
#[derive(Debug, Clone, Copy)]
pub(super) enum Affiliation {
    /// Subscribe to it and read its items (whitelist access).
    Member,
    /// Publish to it too.
    Publisher,
}

/// As the node's owner: give `jids` this affiliation with `node`
/// (XEP-0060 §8.9.2).
pub(super) async fn affiliate(
    sender: &tokio_xmpp::ClientSender,
    service: &Jid,
    node: &str,
    jids: &[BareJid],
    affiliation: Affiliation,
) -> Result<(), IqError> {
    use tokio_xmpp::minidom::rxml::xml_ncname;
    const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
    let name = match affiliation {
        Affiliation::Member => "member",
        Affiliation::Publisher => "publisher",
    };
    if jids.is_empty() {
        return Ok(());
    }
    let mut affiliations =
        Element::builder("affiliations", NS_OWNER).attr(xml_ncname!("node").into(), node);
    for j in jids {
        affiliations = affiliations.append(
            Element::builder("affiliation", NS_OWNER)
                .attr(xml_ncname!("jid").into(), j.to_string())
                .attr(xml_ncname!("affiliation").into(), name)
                .build(),
        );
    }
    let req = Element::builder("pubsub", NS_OWNER)
        .append(affiliations.build())
        .build();
    match iq(sender, service, IqRequest::Set(req), "affiliations").await? {
        IqResponse::Result(_) => Ok(()),
        IqResponse::Error(e) => Err(refused(format!("making {name}s of {node}"), &e)),
    }
}

/// Create `node` on `service` with persistent items, at most `max_items`
/// of them, and the `more` settings; a node that exists already is fine.
/// True when this call created it (so its owner is this account).
pub(super) async fn create_node(
    sender: &tokio_xmpp::ClientSender,
    service: &Jid,
    node: &str,
    max_items: u32,
    more: Vec<tokio_xmpp::parsers::data_forms::Field>,
) -> Result<bool, IqError> {
    use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
    // Keep the latest items (a results site or a catching-up station reads
    // them back); not "max": Prosody's file storage rewrites a node's items
    // on every publish.
    let mut fields = vec![
        Field::new("pubsub#persist_items", FieldType::Boolean).with_value("1"),
        Field::text_single("pubsub#max_items", &max_items.to_string()),
    ];
    fields.extend(more);
    let form = DataForm::new(
        DataFormType::Submit,
        "http://jabber.org/protocol/pubsub#node_config",
        fields,
    );
    let req = PubSub::Create {
        create: pubsub::pubsub::Create {
            node: Some(NodeName(node.to_string())),
        },
        configure: Some(pubsub::pubsub::Configure { form: Some(form) }),
    };
    match iq(sender, service, IqRequest::Set(req.into()), "create").await? {
        IqResponse::Result(_) => {
            tracing::info!(node = %node_uri(&service.to_string(), node), "xmpp: node created");
            Ok(true)
        }
        // Someone else made it in the meantime, or it is there already.
        IqResponse::Error(e) if e.defined_condition == DefinedCondition::Conflict => Ok(false),
        IqResponse::Error(e) => Err(IqError::CreateRefused {
            node: node.to_string(),
            condition: format!("{:?}", e.defined_condition),
            service: service.to_string(),
        }),
    }
}

/// Vote items in a pubsub event message, as remote results.
pub(super) fn remote_results(
    m: &tokio_xmpp::parsers::message::Message,
    own_source: &str,
) -> Vec<RemoteTally> {
    let service = m.from.as_ref().map(ToString::to_string).unwrap_or_default();
    let mut out = Vec::new();
    for p in &m.payloads {
        let Ok(event) = pubsub::Event::try_from(p.clone()) else {
            continue;
        };
        let pubsub::event::Payload::Items {
            node, published, ..
        } = event.payload
        else {
            continue;
        };
        for item in published {
            let Some(v) = item.payload.as_ref().and_then(payload::parse) else {
                continue;
            };
            if v.source.as_deref() == Some(own_source) {
                continue;
            }
            out.push(RemoteTally {
                source: node_uri(&service, &node.0),
                question_id: v.question.id,
                question: v.question.title,
                answers: v
                    .question
                    .answers
                    .into_iter()
                    .map(|(id, title, count, _)| (id, title, count))
                    .collect(),
                total: v.question.total,
                at: now_ms(),
            });
        }
    }
    out
}
