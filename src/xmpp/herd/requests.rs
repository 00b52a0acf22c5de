//! The XEP-0060 requests of the herd's session: read a node's items,
//! make this station's node (persistent, whitelisted to the herd), publish
//! a batch, subscribe. Each IQ is bounded ([`iq`]).

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::data_forms::{Field, FieldType};
use tokio_xmpp::parsers::pubsub::{self, NodeName, PubSub};
use tokio_xmpp::{IqRequest, IqResponse};

use super::MAX_ITEMS;
use super::batch::{Batch, decode, encode, item_id};
pub(super) use crate::xmpp::requests::iq;
use crate::xmpp::requests::{Affiliation, IqError, affiliate, create_node, refused};

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
    create_node(
        sender,
        me,
        node,
        MAX_ITEMS,
        vec![
            Field::new("pubsub#access_model", FieldType::ListSingle).with_value("whitelist"),
            Field::new("pubsub#publish_model", FieldType::ListSingle).with_value("publishers"),
            Field::new("pubsub#send_last_published_item", FieldType::ListSingle)
                .with_value("never"),
            // ejabberd's PEP otherwise notifies only contacts online with
            // a presence subscription, not the herd's subscriptions.
            Field::new("pubsub#presence_based_delivery", FieldType::Boolean).with_value("0"),
        ],
    )
    .await?;
    affiliate(sender, me, node, members, Affiliation::Member).await
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
