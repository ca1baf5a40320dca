import { Component, OnDestroy, OnInit, inject } from '@angular/core';
import { MatButtonModule } from '@angular/material/button';
import { MatIconModule } from '@angular/material/icon';
import { MatListModule } from '@angular/material/list';
import { MatSidenavModule } from '@angular/material/sidenav';
import { MatToolbarModule } from '@angular/material/toolbar';
import { MatTooltipModule } from '@angular/material/tooltip';
import { RouterLink, RouterLinkActive, RouterOutlet } from '@angular/router';

import { LiveOverview } from './live';
import { Session } from './session';

/** The signed-in layout: navigation, live indicator, operator and sign-out. */
@Component({
  selector: 'pm-shell',
  imports: [
    RouterOutlet, RouterLink, RouterLinkActive, MatToolbarModule, MatSidenavModule, MatListModule,
    MatIconModule, MatButtonModule, MatTooltipModule,
  ],
  template: `
    <mat-toolbar class="topbar">
      <span class="logo">paymesh</span><span class="product">operations</span>
      <span class="spacer"></span>
      <span class="live" [class]="live.state()" role="status" aria-live="polite" data-testid="live-indicator"
            [attr.data-state]="live.state()">
        <span class="dot" aria-hidden="true"></span>
        @switch (live.state()) {
          @case ('live') { Live }
          @case ('connecting') { Connecting… }
          @default { Disconnected — retrying }
        }
      </span>
      <a mat-button href="/docs/" target="_blank" rel="noopener" data-testid="api-reference">API reference</a>
      <span class="who" data-testid="operator">{{ session.email() }} · <strong data-testid="role">{{ session.role() }}</strong></span>
      <button mat-button (click)="session.logout()" data-testid="logout">Sign out</button>
    </mat-toolbar>
    <mat-sidenav-container class="container">
      <mat-sidenav mode="side" opened class="nav">
        <nav aria-label="Sections">
          <mat-nav-list>
            @for (item of nav; track item.path) {
              <a mat-list-item [routerLink]="item.path" routerLinkActive="active" #rla="routerLinkActive"
                 [attr.aria-current]="rla.isActive ? 'page' : null">
                <mat-icon matListItemIcon>{{ item.icon }}</mat-icon>
                <span matListItemTitle>{{ item.label }}</span>
              </a>
            }
          </mat-nav-list>
        </nav>
      </mat-sidenav>
      <mat-sidenav-content>
        <main class="content"><router-outlet /></main>
      </mat-sidenav-content>
    </mat-sidenav-container>
  `,
  styles: `
    :host { display: flex; flex-direction: column; height: 100vh; }
    .topbar { background: #0b2a5b; color: #fff; gap: 1rem; position: relative; z-index: 2; }
    .logo { font-weight: 500; letter-spacing: 0.02em; }
    .product { font-weight: 400; opacity: 0.8; font-size: 0.95rem; }
    .who { font-size: 0.9rem; }
    .topbar button, .topbar a { color: #fff; }
    .live { display: inline-flex; align-items: center; gap: 0.4rem; font-size: 0.85rem; padding: 0.15rem 0.6rem; border-radius: 999px; background: rgb(255 255 255 / 12%); }
    .dot { width: 10px; height: 10px; border-radius: 50%; background: #f5a623; }
    .live.live .dot { background: #3ddc84; box-shadow: 0 0 0 3px rgb(61 220 132 / 30%); }
    .live.disconnected .dot { background: #ff6b6b; }
    .container { flex: 1 1 auto; }
    .nav { width: 210px; border-right: 1px solid #e1e4ea; }
    .active { background: #e6eefc; }
    .content { padding: 1.5rem; max-width: 1400px; }
  `,
})
export class Shell implements OnInit, OnDestroy {
  readonly session = inject(Session);
  readonly live = inject(LiveOverview);
  readonly nav = [
    { path: '/overview', label: 'Overview', icon: 'monitoring' },
    { path: '/payments', label: 'Payments', icon: 'payments' },
    { path: '/disputes', label: 'Disputes', icon: 'gavel' },
    { path: '/payouts', label: 'Payouts', icon: 'account_balance' },
    { path: '/webhooks', label: 'Webhooks', icon: 'webhook' },
    { path: '/merchants', label: 'Merchants', icon: 'storefront' },
    { path: '/reconciliation', label: 'Reconciliation', icon: 'balance' },
    { path: '/audit', label: 'Audit log', icon: 'history' },
  ];

  ngOnInit(): void {
    this.live.start();
  }

  ngOnDestroy(): void {
    this.live.stop();
  }
}
