//! The XEP-0060 requests of the herd's session: read a node's items,
//! make this station's node (persistent, whitelisted to the herd), publish
//! a batch, subscribe. Each IQ is bounded by the session's timeout.

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use tokio_xmpp::parsers::pubsub::{self, NodeName, PubSub};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::{IqRequest, IqResponse};

use super::MAX_ITEMS;
use super::batch::{Batch, decode, encode, item_id};
use crate::xmpp::IQ_TIMEOUT;
use crate::xmpp::requests::{IqError, stream};

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

fn refused(what: impl Into<String>, e: &tokio_xmpp::parsers::stanza_error::StanzaError) -> IqError {
    IqError::Refused {
        what: what.into(),
        condition: format!(
            "{:?} {}",
            e.defined_condition,
            e.texts.values().next().map_or("", String::as_str)
        ),
    }
}

/// The batches a node holds (the newest `max`, or all); `None` when the
/// node does not exist or may not be read (yet).
pub(super) async fn items(
    sender: &tokio_xmpp::ClientSender,
    at: &Jid,
    node: &str,
    max: Option<u32>,
) -> Result<Option<Vec<Batch>>, IqError> {
    let mut req = pubsub::pubsub::Items::new(node);
    req.max_items = max;
    let r = iq(
        sender,
        at,
        IqRequest::Get(PubSub::Items(req).into()),
        "items",
    )
    .await?;
    let payload = match r {
        IqResponse::Result(Some(p)) => p,
        IqResponse::Result(None) => return Ok(Some(Vec::new())),
        IqResponse::Error(e) => {
            tracing::debug!(node, at = %at, condition = ?e.defined_condition, "herd over xmpp: cannot read the node (yet)");
            return Ok(None);
        }
    };
    // Read by hand, not with xmpp-parsers' strict `PubSub`: ejabberd adds
    // an RSM `<set>` beside the items, which that parser refuses.
    const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    Ok(Some(
        payload
            .children()
            .filter(|c| c.is("items", NS_PUBSUB))
            .flat_map(|items| items.children().filter(|i| i.is("item", NS_PUBSUB)))
            .filter_map(|item| item.children().find_map(decode))
            .collect(),
    ))
}

/// Create this station's node (persistent, whitelisted) if it is not there,
/// and make the herd's other stations its members.
pub(super) async fn own_node(
    sender: &tokio_xmpp::ClientSender,
    me: &Jid,
    node: &str,
    members: &[BareJid],
) -> Result<(), IqError> {
    let form = DataForm::new(
        DataFormType::Submit,
        "http://jabber.org/protocol/pubsub#node_config",
        vec![
            Field::new("pubsub#persist_items", FieldType::Boolean).with_value("1"),
            Field::text_single("pubsub#max_items", &MAX_ITEMS.to_string()),
            Field::new("pubsub#access_model", FieldType::ListSingle).with_value("whitelist"),
            Field::new("pubsub#publish_model", FieldType::ListSingle).with_value("publishers"),
            Field::new("pubsub#send_last_published_item", FieldType::ListSingle)
                .with_value("never"),
            // ejabberd's PEP otherwise notifies only contacts online with
            // a presence subscription, not the herd's subscriptions.
            Field::new("pubsub#presence_based_delivery", FieldType::Boolean).with_value("0"),
        ],
    );
    let create = PubSub::Create {
        create: pubsub::pubsub::Create {
            node: Some(NodeName(node.to_string())),
        },
        configure: Some(pubsub::pubsub::Configure { form: Some(form) }),
    };
    match iq(sender, me, IqRequest::Set(create.into()), "create").await? {
        IqResponse::Result(_) => tracing::info!(node, "herd over xmpp: node created"),
        IqResponse::Error(e) if e.defined_condition == DefinedCondition::Conflict => {}
        IqResponse::Error(e) => return Err(refused(format!("creating {node}"), &e)),
    }
    let mut affiliations =
        Element::builder("affiliations", "http://jabber.org/protocol/pubsub#owner")
            .attr(xml_ncname!("node").into(), node);
    for m in members {
        affiliations = affiliations.append(
            Element::builder("affiliation", "http://jabber.org/protocol/pubsub#owner")
                .attr(xml_ncname!("jid").into(), m.to_string())
                .attr(xml_ncname!("affiliation").into(), "member")
                .build(),
        );
    }
    let req = Element::builder("pubsub", "http://jabber.org/protocol/pubsub#owner")
        .append(affiliations.build())
        .build();
    match iq(sender, me, IqRequest::Set(req), "affiliations").await? {
        IqResponse::Result(_) => Ok(()),
        IqResponse::Error(e) => Err(refused(format!("making the herd members of {node}"), &e)),
    }
}

pub(super) async fn publish(
    sender: &tokio_xmpp::ClientSender,
    me: &Jid,
    node: &str,
    b: &Batch,
) -> Result<(), IqError> {
    let req = PubSub::Publish {
        publish: pubsub::pubsub::Publish {
            node: NodeName(node.to_string()),
            items: vec![pubsub::pubsub::Item {
                id: Some(pubsub::ItemId(item_id(b.feed, b.first))),
                publisher: None,
                payload: Some(encode(b)),
            }],
        },
        publish_options: None,
    };
    match iq(sender, me, IqRequest::Set(req.into()), "publish").await? {
        IqResponse::Result(_) => Ok(()),
        IqResponse::Error(e) => Err(refused(format!("publishing to {node}"), &e)),
    }
}

pub(super) async fn subscribe(
    sender: &tokio_xmpp::ClientSender,
    bound: &Jid,
    at: &Jid,
    node: &str,
) -> Result<bool, IqError> {
    let req = PubSub::Subscribe {
        subscribe: Some(pubsub::pubsub::Subscribe {
            jid: bound.clone(),
            node: Some(NodeName(node.to_string())),
        }),
        options: None,
    };
    Ok(matches!(
        iq(sender, at, IqRequest::Set(req.into()), "subscribe").await?,
        IqResponse::Result(_)
    ))
}
