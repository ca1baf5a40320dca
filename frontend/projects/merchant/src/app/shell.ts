import { Component, inject } from '@angular/core';
import { MatButtonModule } from '@angular/material/button';
import { MatButtonToggleModule } from '@angular/material/button-toggle';
import { MatIconModule } from '@angular/material/icon';
import { MatListModule } from '@angular/material/list';
import { MatSidenavModule } from '@angular/material/sidenav';
import { MatToolbarModule } from '@angular/material/toolbar';
import { Router, RouterLink, RouterLinkActive, RouterOutlet } from '@angular/router';

import { Session, type Mode } from './session';

/** The signed-in layout: navigation, the test/live switch, the user and sign-out. */
@Component({
  selector: 'pm-shell',
  imports: [
    RouterOutlet, RouterLink, RouterLinkActive, MatToolbarModule, MatSidenavModule, MatListModule,
    MatIconModule, MatButtonModule, MatButtonToggleModule,
  ],
  template: `
    <mat-toolbar class="topbar">
      <span class="logo">paymesh</span>
      <span class="product" data-testid="merchant-name">{{ session.merchantName() }}</span>
      <span class="spacer"></span>
      <mat-button-toggle-group class="mode" [value]="session.mode()" (change)="switchMode($event.value)"
                               aria-label="Mode" hideSingleSelectionIndicator data-testid="mode-switch">
        <mat-button-toggle value="test" data-testid="mode-test">Test</mat-button-toggle>
        <mat-button-toggle value="live" data-testid="mode-live">Live</mat-button-toggle>
      </mat-button-toggle-group>
      <a mat-button href="/docs/" target="_blank" rel="noopener">API reference</a>
      <span class="who" data-testid="user">{{ session.email() }} · <strong data-testid="role">{{ session.role() }}</strong></span>
      <button mat-button (click)="session.signOut()" data-testid="sign-out">Sign out</button>
    </mat-toolbar>
    @if (session.mode() === 'test') {
      <div class="test-banner" role="status" data-testid="test-banner">Test mode: test data only, no real money moves.</div>
    }
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
        <!-- One outlet per mode: switching makes the page anew, so it loads that mode's data. -->
        <main class="content" [attr.data-mode]="session.mode()">
          @for (mode of [session.mode()]; track mode) { <router-outlet /> }
        </main>
      </mat-sidenav-content>
    </mat-sidenav-container>
  `,
  styles: `
    :host { display: flex; flex-direction: column; height: 100vh; }
    .topbar { background: #0b2a5b; color: #fff; gap: 1rem; position: relative; z-index: 2; }
    .logo { font-weight: 500; letter-spacing: 0.02em; }
    .product { font-weight: 400; opacity: 0.85; font-size: 0.95rem; }
    .who { font-size: 0.9rem; }
    .topbar > button, .topbar > a { color: #fff; }
    .mode { --mat-button-toggle-height: 32px; background: #fff; }
    .test-banner { background: #ffe2b8; color: #5c3a00; text-align: center; font-size: 0.85rem; font-weight: 500; padding: 0.2rem; }
    .container { flex: 1 1 auto; }
    .nav { width: 210px; border-right: 1px solid #e1e4ea; }
    .active { background: #e6eefc; }
    .content { padding: 1.5rem; max-width: 1400px; }
  `,
})
export class Shell {
  readonly session = inject(Session);
  private readonly router = inject(Router);
  readonly nav = [
    { path: '/home', label: 'Home', icon: 'home' },
    { path: '/payments', label: 'Payments', icon: 'payments' },
    { path: '/disputes', label: 'Disputes', icon: 'gavel' },
    { path: '/balance', label: 'Balance', icon: 'account_balance' },
    { path: '/payouts', label: 'Payouts', icon: 'account_balance_wallet' },
    { path: '/events', label: 'Events', icon: 'list_alt' },
    { path: '/webhooks', label: 'Webhooks', icon: 'webhook' },
    { path: '/api-keys', label: 'API keys', icon: 'key' },
    { path: '/team', label: 'Team', icon: 'group' },
  ];

  /**
   * Shows the other mode's data. An object's page (`/payments/pay_…`, `/events?id=evt_…`) has no
   * twin in the other mode, so it goes to its list.
   */
  async switchMode(mode: Mode): Promise<void> {
    const [path, query] = this.router.url.split('?', 2);
    const [section, id] = path.split('/').filter(Boolean);
    if (id || query) {
      await this.router.navigate(['/', section]);
    }
    this.session.mode.set(mode);
  }
}
