//! Spaces and room previews: the space hierarchy (depth first, rooms this server is not
//! in asked of the servers a space names), and the summary of any room, local or not.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use palisade_federation::FederationClient;
use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId,
    api::{
        client::space::SpaceHierarchyRoomsChunk,
        federation::space::{SpaceHierarchyParentSummary, get_hierarchy},
    },
    room::{RoomSummary, RoomType},
};

use crate::{
    Error, Result,
    service::rooms::{
        Rooms,
        summary::{SpaceChild, sort_children},
    },
};

/// The most rooms one walk of a hierarchy visits, over all its pages.
const MAX_ROOMS: usize = 500;

/// How a hierarchy is walked; the same through all pages of one walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    pub max_depth: usize,
    pub suggested_only: bool,
}

/// A room of the hierarchy as far as it was learnt: its summary and, if it was asked
/// for them, the children it lists.
struct Found {
    summary: RoomSummary,
    children: Option<Vec<SpaceChild>>,
}

pub struct Spaces {
    rooms: Arc<Rooms>,
    client: Arc<FederationClient>,
    server_name: OwnedServerName,
    federation_enabled: bool,
}

impl Spaces {
    pub fn new(
        rooms: Arc<Rooms>,
        client: Arc<FederationClient>,
        server_name: OwnedServerName,
        federation_enabled: bool,
    ) -> Self {
        Self {
            rooms,
            client,
            server_name,
            federation_enabled,
        }
    }

    /// A room's summary as `user` may see it (local, else asked of `via` and the room's
    /// own server); `None` when it is unknown or not to be shown to them.
    pub async fn summary(
        &self,
        user: Option<&UserId>,
        room_id: &RoomId,
        via: &[OwnedServerName],
    ) -> Result<Option<RoomSummary>> {
        let summary = if self.rooms.is_resident(room_id)? {
            self.rooms.summary(room_id)?
        } else {
            match self.ask(room_id, via, false).await {
                Some(answer) => answer.room.summary,
                None => return Ok(None),
            }
        };
        Ok(self.rooms.may_preview(&summary, user)?.then_some(summary))
    }

    /// The rooms of a space's tree from `skip` on, at most `limit` of them, depth first
    /// from `root`; and whether more follow. Rooms `user` may not preview are left out
    /// (their subtrees too); the root itself must be one they may preview.
    pub async fn hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        walk: Walk,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<SpaceHierarchyRoomsChunk>, bool)> {
        let mut learnt: HashMap<OwnedRoomId, RoomSummary> = HashMap::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<(OwnedRoomId, usize, Vec<OwnedServerName>)> =
            vec![(root.to_owned(), 0, Vec::new())];
        let mut rooms = Vec::new();
        let mut found = 0;
        while let Some((room_id, depth, via)) = stack.pop() {
            if !seen.insert(room_id.clone()) || seen.len() > MAX_ROOMS {
                continue;
            }
            let descend = depth < walk.max_depth;
            let room = self
                .find(&room_id, &via, descend, walk.suggested_only, &mut learnt)
                .await?;
            let Some(room) = room.filter(|room| {
                self.rooms
                    .may_preview(&room.summary, Some(user))
                    .unwrap_or(false)
            }) else {
                if room_id == root {
                    return Err(Error::forbidden("You may not preview this room"));
                }
                continue;
            };
            if found == skip + limit {
                return Ok((rooms, true));
            }
            let children = room.children.unwrap_or_default();
            if descend && room.summary.room_type == Some(RoomType::Space) {
                for child in children.iter().rev() {
                    if !walk.suggested_only || child.suggested {
                        stack.push((child.room_id.clone(), depth + 1, child.via.clone()));
                    }
                }
            }
            if found >= skip {
                let state = children.into_iter().map(|child| child.event).collect();
                rooms.push(SpaceHierarchyRoomsChunk::new(room.summary, state));
            }
            found += 1;
        }
        Ok((rooms, false))
    }

    /// A room of the walk: local, learnt from a parent's answer (when its children are
    /// not needed), or asked of the servers its parent named.
    async fn find(
        &self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        with_children: bool,
        suggested_only: bool,
        learnt: &mut HashMap<OwnedRoomId, RoomSummary>,
    ) -> Result<Option<Found>> {
        if self.rooms.is_resident(room_id)? {
            return Ok(Some(Found {
                summary: self.rooms.summary(room_id)?,
                children: Some(self.rooms.space_children(room_id)?),
            }));
        }
        if let Some(summary) = learnt.get(room_id)
            && !(with_children && summary.room_type == Some(RoomType::Space))
        {
            return Ok(Some(Found {
                summary: summary.clone(),
                children: None,
            }));
        }
        let Some(answer) = self.ask(room_id, via, suggested_only).await else {
            return Ok(learnt.remove(room_id).map(|summary| Found {
                summary,
                children: None,
            }));
        };
        for child in answer.children {
            learnt.insert(child.room_id.clone(), child);
        }
        let mut children: Vec<SpaceChild> = answer
            .room
            .children_state
            .iter()
            .filter_map(|event| SpaceChild::from_stripped(event.clone()))
            .collect();
        sort_children(&mut children);
        Ok(Some(Found {
            summary: answer.room.summary,
            children: Some(children),
        }))
    }

    /// The hierarchy answer of the first of `via` (then the room id's server) that
    /// gives one.
    async fn ask(
        &self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
    ) -> Option<get_hierarchy::v1::Response> {
        if !self.federation_enabled {
            return None;
        }
        let mut servers: Vec<&ServerName> = via.iter().map(|server| server.as_ref()).collect();
        if let Some(server) = room_id.server_name() {
            servers.push(server);
        }
        let mut tried = HashSet::new();
        for server in servers {
            if server == self.server_name || !tried.insert(server) {
                continue;
            }
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            match self.client.send(server, request).await {
                Ok(answer) if answer.room.summary.room_id == room_id => return Some(answer),
                Ok(_) => tracing::debug!(%server, %room_id, "hierarchy answer for another room"),
                Err(error) => tracing::debug!(%server, %room_id, %error, "hierarchy not answered"),
            }
        }
        None
    }

    /// What another server is told of a local room's part of a hierarchy (`None`: the
    /// room is not here, or not for that server to see).
    pub fn answer(
        &self,
        room_id: &RoomId,
        server: &ServerName,
        suggested_only: bool,
    ) -> Result<Option<get_hierarchy::v1::Response>> {
        if !self.rooms.is_resident(room_id)? {
            return Ok(None);
        }
        let summary = self.rooms.summary(room_id)?;
        if !self.rooms.may_preview_from(&summary, server)? {
            return Ok(None);
        }
        let children = self.rooms.space_children(room_id)?;
        let mut response = get_hierarchy::v1::Response::new(SpaceHierarchyParentSummary::new(
            summary,
            children.iter().map(|child| child.event.clone()).collect(),
        ));
        for child in children {
            if suggested_only && !child.suggested {
                continue;
            }
            if !self.rooms.is_resident(&child.room_id)? {
                continue;
            }
            let summary = self.rooms.summary(&child.room_id)?;
            if self.rooms.may_preview_from(&summary, server)? {
                response.children.push(summary);
            } else {
                response.inaccessible_children.push(child.room_id);
            }
        }
        Ok(Some(response))
    }
}
